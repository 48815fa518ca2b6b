// The same guest traffic as tcp-udp-direct, with the TAP opened with a vnet header and checksum +
// TCP segmentation offload (`weft vm --tap-vnet-hdr`): the guest's kernel hands weft 64 KiB TCP
// segments with partial checksums and takes weft's 64 KiB segments whole. UDP of 1…8000 bytes
// (fragmented by the guest, so never offloaded) and the small-page, refused, half-close and
// parallel cases check that everything besides bulk TCP still works there.
import { describeGuestTraffic } from '../harness/guest-traffic';

describeGuestTraffic('guest TCP/UDP through weft vm --tap-vnet-hdr (segmentation offload)', 'offload', {
  upstream: async () => ({ weftArgs: ['--upstream', 'direct', '--allow-host-loopback'], stop: async () => {} }),
  bigBytes: 256 << 20,
  parallel: 100,
  vnetHdr: true,
  // The sockets are the same as without offload (tcp-udp-direct checks them); skip the minute's wait.
  checkFds: false,
});
