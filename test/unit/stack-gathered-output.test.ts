// Frames in two parts (StackOptions.outputGathered): a link that writes with writev gets a long TCP
// payload as a view of the connection's send buffer beside a head holding every header, not copied
// into the frame. Joined, the two parts must be the very frame the copying path builds — through
// the send buffer's wrap (where the payload is not in one piece and is copied), retransmissions,
// segmentation offload, and with a capture (which needs whole frames).
import { describe, expect, it } from 'vitest';
import { instant } from '../../core/clock';
import { Stack } from '../../core/stack';
import { parseIpv4 } from '../../core/wire/address';
import { parseEthernet } from '../../core/wire/ethernet';
import { IPPROTO_TCP, parseIpv4Packet } from '../../core/wire/ipv4';
import { isDrop } from '../../core/wire/parse-result';
import { ACK, emitTcp, SYN, tcpHeaderLength, verifyTcpChecksum } from '../../core/wire/tcp';
import { FakeUpstream } from '../support/fake-upstream';
import { GUEST_IP, ipv4Frame, seededRandom, tcpSegmentOf } from '../support/frames';

const DST = parseIpv4('93.184.216.34');

interface Run {
  frames: Uint8Array[];
  gathered: number;
  payloadBytes: number;
}

/**
 * One download through a stack, driven the same way every time: `gather` gives the stack a
 * two-part output, `capture` a pcap hook. The guest acknowledges all it has after every chunk
 * except every seventh, whose last segment it lets the stack retransmit.
 */
function download(opts: { gather: boolean; capture?: boolean; segmentationOffload?: boolean }): Run {
  let now = 5_000;
  const run: Run = { frames: [], gathered: 0, payloadBytes: 0 };
  const upstream = new FakeUpstream();
  const stack = new Stack({
    clock: { now: () => instant(now) },
    random: seededRandom(7).fill,
    upstream,
    segmentationOffload: opts.segmentationOffload ?? false,
    // A small send buffer wraps often: payloads across its end cannot be sent where they lie.
    tcp: { sendBufferBytes: 48 * 1024 },
    output: (f) => run.frames.push(f.slice()),
    ...(opts.gather
      ? {
          outputGathered: (head: Uint8Array, payload: Uint8Array) => {
            run.gathered++;
            const frame = new Uint8Array(head.length + payload.length);
            frame.set(head);
            frame.set(payload, head.length);
            run.frames.push(frame);
          },
        }
      : {}),
    ...(opts.capture ? { capture: () => {} } : {}),
  });
  const send = (flags: number, seq: number, ack: number) => {
    const repr = { srcPort: 40000, dstPort: 80, seq, ack, flags, window: 65535, options: flags & SYN ? { mss: 1460 } : undefined, payload: new Uint8Array(0) };
    const seg = new Uint8Array(tcpHeaderLength(repr.options));
    emitTcp(repr, seg, 0, GUEST_IP, DST);
    stack.input(ipv4Frame({ src: GUEST_IP, dst: DST, protocol: IPPROTO_TCP, id: 1 }, seg));
  };
  send(SYN, 1000, 0);
  const stream = upstream.tcp[0];
  stream.connect();
  const synAck = run.frames.map(tcpSegmentOf).find((s) => s && s.flags & SYN);
  if (!synAck) throw new Error('no SYN-ACK');
  const first = (synAck.seq + 1) >>> 0;
  send(ACK, 1001, first);
  const received = () => {
    let top = 0;
    for (const f of run.frames) {
      const s = tcpSegmentOf(f);
      if (s && s.payload.length > 0) top = Math.max(top, ((s.seq - first) >>> 0) + s.payload.length);
    }
    return top;
  };
  const random = seededRandom(11);
  for (let chunk = 0; chunk < 60; chunk++) {
    // Odd sizes and bytes that say where they are, so a payload from the wrong place shows.
    const data = new Uint8Array(1000 + Math.floor(random.next() * 12_000));
    for (let i = 0; i < data.length; i++) data[i] = (chunk * 131 + i * 7) & 0xff;
    run.payloadBytes += data.length;
    stream.send(data);
    const top = received();
    if (chunk % 7 === 6) {
      // Hold back the ACK of the last segment: its retransmission comes from the buffer again.
      send(ACK, 1001, (first + Math.max(0, top - 1000)) >>> 0);
      now += 2_000;
      stack.poll();
    }
    send(ACK, 1001, (first + received()) >>> 0);
  }
  return run;
}

function checkFrames(frames: Uint8Array[]): void {
  for (const f of frames) {
    const eth = parseEthernet(f);
    if (isDrop(eth)) throw new Error(eth);
    const ip = parseIpv4Packet(eth.payload);
    if (isDrop(ip)) throw new Error(ip);
    if (ip.protocol === IPPROTO_TCP && ip.payload.length <= 1480) expect(verifyTcpChecksum(ip.payload, ip.src, ip.dst)).toBe(true);
  }
}

describe('frames in two parts', () => {
  it('joined, are the very frames the copying path builds, through wraps and retransmissions', () => {
    const copied = download({ gather: false });
    const gathered = download({ gather: true });
    expect(copied.gathered).toBe(0);
    // Most data segments went in two parts; some (across the ring's end, or short) were built whole.
    const dataSegments = gathered.frames.filter((f) => (tcpSegmentOf(f)?.payload.length ?? 0) >= 1024).length;
    expect(gathered.gathered).toBeGreaterThan(dataSegments / 2);
    expect(gathered.gathered).toBeLessThan(dataSegments);
    expect(gathered.frames.length).toBe(copied.frames.length);
    for (let i = 0; i < copied.frames.length; i++) expect(Buffer.from(gathered.frames[i]).equals(Buffer.from(copied.frames[i])), `frame ${i}`).toBe(true);
    checkFrames(gathered.frames);
    // Retransmissions happened (the same payload went out twice).
    const seqs = gathered.frames
      .map(tcpSegmentOf)
      .filter((s) => s && s.payload.length > 0)
      .map((s) => s?.seq);
    expect(new Set(seqs).size).toBeLessThan(seqs.length);
  });

  it('with segmentation offload, long segments with partial checksums are the same too', () => {
    const copied = download({ gather: false, segmentationOffload: true });
    const gathered = download({ gather: true, segmentationOffload: true });
    expect(gathered.gathered).toBeGreaterThan(0);
    expect(gathered.frames.some((f) => f.length > 1514)).toBe(true);
    expect(gathered.frames.length).toBe(copied.frames.length);
    for (let i = 0; i < copied.frames.length; i++) expect(Buffer.from(gathered.frames[i]).equals(Buffer.from(copied.frames[i])), `frame ${i}`).toBe(true);
  });

  it('are not used while a capture needs whole frames', () => {
    const run = download({ gather: true, capture: true });
    expect(run.gathered).toBe(0);
    expect(run.frames.length).toBeGreaterThan(50);
    checkFrames(run.frames);
  });
});
