// Byte-exact transfers through `weft vm --tap-fd 3 --upstream direct` while the guest's link loses,
// duplicates, reorders (with delay) and corrupts frames, in both directions: the issue-8 fault
// matrix (test/harness/fault-wire-matrix.ts) on the fault wire (test/harness/fault-wire.ts, a
// user-space stand-in for netem, which this kernel lacks). faults-relay.test.ts runs the same
// matrix through `weft relay`.
//
// Sizes: 50 MB each way under no fault, duplication and corruption, 30 MB under loss and
// reordering, where weft's TCP sender (the download) and the guest's Linux TCP (the upload under
// reordering, near 2 MB/s) are slowest: with both fault files the run stays near 2 minutes on a
// 2-core machine. WEFT_FAULT_BYTES sets one size for every fault (WEFT_FAULT_BYTES=200000000 for the
// full issue-8 run); WEFT_FAULT_SEED the wire's seed; WEFT_FAULT_PCAP=FILE makes weft write a pcap
// (large: every frame of every transfer).

import { describeFaultMatrix, directUpstream, issueFaults } from '../harness/fault-wire-matrix';

describeFaultMatrix({
  title: 'guest transfers through weft vm --upstream direct on a faulty link',
  path: 'weft vm --upstream direct',
  upstream: directUpstream,
  faults: issueFaults({ baseline: 50_000_000, loss: 30_000_000, duplication: 50_000_000, reordering: 30_000_000, corruption: 50_000_000 }),
});
