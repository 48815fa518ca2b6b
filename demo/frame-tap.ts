// A FramePort wrapper: attachV86() attaches to this instead of the network, and every frame that
// crosses the virtual wire is shown to `observe` on its way. The page needs no other hook into the
// stack to draw its packet log and throughput chart, and the frames themselves pass unchanged.

import type { FramePort, WeftNetwork } from '../web/index';

export type FrameDirection = 'from-guest' | 'to-guest';

export function tapFrames(network: Pick<WeftNetwork, 'attach'>, observe: (frame: Uint8Array, direction: FrameDirection) => void): Pick<WeftNetwork, 'attach'> {
  return {
    attach(port: FramePort) {
      return network.attach({
        send(frame) {
          observe(frame, 'to-guest');
          port.send(frame);
        },
        onFrame(cb) {
          port.onFrame((frame) => {
            observe(frame, 'from-guest');
            cb(frame);
          });
        },
        // Segmentation offload is the card's to say; the tap passes it through.
        ...(port.offloadSegments ? { offloadSegments: port.offloadSegments.bind(port) } : {}),
      });
    },
  };
}
