;; The Internet checksum's sum with WebAssembly SIMD (core/wire/checksum-simd.ts loads it; its bytes
;; are in checksum-wasm.ts, made from this file by `node scripts/build-checksum-wasm.mjs`).
;;
;; sum(len): the one's-complement sum of the little-endian 16-bit words in [0, len & ~15) of the
;; module's one page of memory, folded to 16 bits. The caller copies its bytes to offset 0 first, at
;; most 65,536 at a time, and byte-swaps the result (RFC 1071 §2B: the sum does not care about byte
;; order). Each load widens eight words into four 32-bit lanes (i32x4.extadd_pairwise_i16x8_u);
;; over one page a lane takes at most 4,096 loads × 2 × 65,535 < 2^32, so no carry is lost before
;; the lanes are added up as 64-bit numbers and folded.
(module
  (memory (export "memory") 1 1)
  (func (export "sum") (param $len i32) (result i32)
    (local $i i32) (local $end i32) (local $a v128) (local $b v128) (local $s i64)
    ;; 64 bytes a step, into two accumulators so consecutive adds do not wait on each other.
    (local.set $end (i32.and (local.get $len) (i32.const -64)))
    (block $done64
      (loop $more64
        (br_if $done64 (i32.ge_u (local.get $i) (local.get $end)))
        (local.set $a (i32x4.add (local.get $a) (i32x4.extadd_pairwise_i16x8_u (v128.load (local.get $i)))))
        (local.set $b (i32x4.add (local.get $b) (i32x4.extadd_pairwise_i16x8_u (v128.load offset=16 (local.get $i)))))
        (local.set $a (i32x4.add (local.get $a) (i32x4.extadd_pairwise_i16x8_u (v128.load offset=32 (local.get $i)))))
        (local.set $b (i32x4.add (local.get $b) (i32x4.extadd_pairwise_i16x8_u (v128.load offset=48 (local.get $i)))))
        (local.set $i (i32.add (local.get $i) (i32.const 64)))
        (br $more64)))
    ;; Then 16 bytes a step.
    (local.set $end (i32.and (local.get $len) (i32.const -16)))
    (block $done16
      (loop $more16
        (br_if $done16 (i32.ge_u (local.get $i) (local.get $end)))
        (local.set $a (i32x4.add (local.get $a) (i32x4.extadd_pairwise_i16x8_u (v128.load (local.get $i)))))
        (local.set $i (i32.add (local.get $i) (i32.const 16)))
        (br $more16)))
    ;; Eight 32-bit lanes into one 64-bit sum, then the end-around carries.
    (local.set $a (i64x2.add (i64x2.extend_low_i32x4_u (local.get $a)) (i64x2.extend_high_i32x4_u (local.get $a))))
    (local.set $b (i64x2.add (i64x2.extend_low_i32x4_u (local.get $b)) (i64x2.extend_high_i32x4_u (local.get $b))))
    (local.set $a (i64x2.add (local.get $a) (local.get $b)))
    (local.set $s (i64.add (i64x2.extract_lane 0 (local.get $a)) (i64x2.extract_lane 1 (local.get $a))))
    (block $folded
      (loop $fold
        (br_if $folded (i64.le_u (local.get $s) (i64.const 0xffff)))
        (local.set $s (i64.add (i64.and (local.get $s) (i64.const 0xffff)) (i64.shr_u (local.get $s) (i64.const 16))))
        (br $fold)))
    (i32.wrap_i64 (local.get $s)))
)
