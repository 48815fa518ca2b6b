/** The module's bytes, as wabt assembles core/wire/checksum.wat. */
export function assembleChecksumWasm(): Promise<Uint8Array>;
/** core/wire/checksum-wasm.ts for those bytes. */
export function checksumWasmSource(bytes: Uint8Array): string;
