// The sender's loss-recovery state as one value (the shape of Linux's tcp_ca_state), and the events
// that move it. What each state means for sending is in ./tcp-sender.ts; here is only which event
// leads where.
//   open      nothing out of order: the window grows with each ACK.
//   disorder  the guest reported data out of order (SACK blocks above a hole, or duplicate ACKs
//             without SACK) but nothing is deemed lost yet; the sender acts as in open.
//   recovery  fast recovery: RACK or the third duplicate ACK found a loss (RFC 6675 with SACK,
//             NewReno, RFC 6582, without); the window was cut once, lost pieces go first.
//   loss      a retransmission timeout: everything not SACKed is resent, from one segment.
// recovery and loss last until SND.UNA reaches the recovery point (SND.MAX when they began), or
// until the reduction proves needless.

export type RecoveryState = 'open' | 'disorder' | 'recovery' | 'loss';

export type RecoveryEvent =
  | 'out-of-order' // after an ACK, data is SACKed above a hole or duplicate ACKs are counted
  | 'in-order' // after an ACK, neither
  | 'loss' // RACK or the third duplicate ACK deemed a piece lost
  | 'timeout' // the retransmission timer fired
  | 'recovered' // SND.UNA reached the recovery point
  | 'undone'; // Eifel timestamps or DSACKs proved the reduction needless

const NEXT: { readonly [S in RecoveryState]: Partial<Record<RecoveryEvent, RecoveryState>> } = {
  open: { 'out-of-order': 'disorder', loss: 'recovery', timeout: 'loss' },
  disorder: { 'in-order': 'open', loss: 'recovery', timeout: 'loss' },
  // A loss found in recovery or after a timeout belongs to the episode already running.
  recovery: { timeout: 'loss', recovered: 'open', undone: 'open' },
  loss: { timeout: 'loss', recovered: 'open', undone: 'open' },
};

/** The state after `event`; events that do not apply in `state` leave it as it is. */
export function nextRecoveryState(state: RecoveryState, event: RecoveryEvent): RecoveryState {
  return NEXT[state][event] ?? state;
}

/** A congestion reduction is running (recovery or loss): the window was cut for this episode. */
export function reducing(state: RecoveryState): boolean {
  return state === 'recovery' || state === 'loss';
}
