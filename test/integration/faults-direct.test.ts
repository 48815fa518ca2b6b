// Byte-exact transfers through `weft vm --tap-fd 3 --upstream direct` while the guest's link loses,
// duplicates, reorders (with delay) and corrupts frames, in both directions: the issue-8 fault
// matrix (test/harness/fault-wire-matrix.ts) on the fault wire (test/harness/fault-wire.ts, a
// user-space stand-in for netem, which this kernel lacks). faults-relay.test.ts runs the same
// matrix through `weft relay`.
//
// Sizes: weft's own sending (the download) is slow under loss and reordering (near 0.8 and 0.5 MB/s
// here: its loss recovery falls back to the RTO whenever a retransmission, or the tail of a small
// window or its ACKs, is lost, and it takes reordering for loss; the guest's Linux TCP uploads at 6
// and 2 MB/s on the same wire), so those two move 10 and 8 MB each way, the others 50 MB: the file
// takes under a minute on a 2-core machine. WEFT_FAULT_BYTES sets one size for every fault
// (WEFT_FAULT_BYTES=200000000 for the full issue-8 run, about 20 minutes); WEFT_FAULT_SEED the
// wire's seed; WEFT_FAULT_PCAP=FILE makes weft write a pcap (large: every frame of every transfer).

import { describeFaultMatrix, directUpstream, issueFaults } from '../harness/fault-wire-matrix';

describeFaultMatrix({
  title: 'guest transfers through weft vm --upstream direct on a faulty link',
  path: 'weft vm --upstream direct',
  upstream: directUpstream,
  faults: issueFaults({ baseline: 50_000_000, loss: 10_000_000, duplication: 50_000_000, reordering: 8_000_000, corruption: 50_000_000 }),
});
