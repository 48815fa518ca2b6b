// The generic way to connect an emulator to a weft network: anything that can send Ethernet
// frames and be told about frames for it.

export interface FramePort {
  /** weft calls this with each frame for the guest. The frame is weft's to give away: keep it. */
  send(frame: Uint8Array): void;
  /** The emulator calls `cb` with each frame the guest sends (weft copies it). */
  onFrame(cb: (frame: Uint8Array) => void): void;
}
