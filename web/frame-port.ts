// The generic way to connect an emulator to a weft network: anything that can send Ethernet
// frames and be told about frames for it.

export interface FramePort {
  /** weft calls this with each frame for the guest. The frame is weft's to give away: keep it. */
  send(frame: Uint8Array): void;
  /** The emulator calls `cb` with each frame the guest sends (weft copies it). */
  onFrame(cb: (frame: Uint8Array) => void): void;
  /**
   * Optional, for a card with segmentation offload towards the guest (virtio-net's GUEST_TSO4, as
   * attachV86 offers it): weft calls this once, at attach, with the link MTU and a function the
   * port calls with true while its guest takes IPv4 TCP segments longer than the MTU whole (their
   * TCP checksum then holds only the pseudo-header sum, as from a NIC driver with checksum
   * offload), and false when it stops. weft sends such segments only after true, and splits any
   * still under way for a port that said false; a port without this method never gets them.
   */
  offloadSegments?(mtu: number, accepts: (on: boolean) => void): void;
}
