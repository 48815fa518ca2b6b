/**
 * Every parser returns either the parsed view or a drop reason: a short kebab-case string that names
 * the layer and the fault (`ipv4-bad-checksum`, `dhcp-option-overrun`). The stack counts drops by
 * this string, so a reason must be stable and must not embed packet data.
 */
export type DropReason = string;

export type Parsed<T> = T | DropReason;

export function isDrop<T>(result: Parsed<T>): result is DropReason {
  return typeof result === 'string';
}
