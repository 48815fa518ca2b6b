// The guest traffic of tcp-udp-offload with no capture: weft then writes long TCP payloads to the
// TAP in two parts — headers, and the payload where the connection's send buffer holds it — in
// one writev, never copied into a frame (a capture needs whole frames, so every other guest test
// takes the copying path). Smaller than its siblings: the path is what is checked, not the volume.
import { describeGuestTraffic } from '../harness/guest-traffic';

describeGuestTraffic('guest TCP/UDP through weft vm --tap-vnet-hdr without a capture (payloads sent from the send buffers)', 'gathered', {
  upstream: async () => ({ weftArgs: ['--upstream', 'direct', '--allow-host-loopback'], stop: async () => {} }),
  bigBytes: 64 << 20,
  parallel: 20,
  vnetHdr: true,
  checkFds: false,
  capture: false,
});
