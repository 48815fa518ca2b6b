// `weft vm --tap-fd 3` with a real Linux guest: a network namespace whose TAP the launcher hands to weft.
import { describeGuestOverLink } from '../harness/guest-scenario';

describeGuestOverLink('weft vm --tap-fd with a Linux guest in a netns', 'tap', async (ns, weftArgs) => ({
  weft: await ns.spawnWeftOnTap(weftArgs),
}));
