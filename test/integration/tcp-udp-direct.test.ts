// Guest TCP and UDP through `weft vm --upstream direct --allow-host-loopback` with a real Linux guest:
// 1 GiB both ways, 500 parallel connections, refused port, half-close, UDP echo, no fd leaked.
import { describeGuestTraffic } from '../harness/guest-traffic';

describeGuestTraffic('guest TCP/UDP through weft vm --upstream direct', 'direct', {
  upstream: async () => ({ weftArgs: ['--upstream', 'direct', '--allow-host-loopback'], stop: async () => {} }),
  bigBytes: 1 << 30,
  parallel: 500,
});
