/**
 * Every parser returns either the parsed view or a drop reason: a short kebab-case string that names
 * the layer and the fault (`ipv4-bad-checksum`, `dhcp-option-overrun`). The stack counts drops by
 * this string, and it becomes a metric label, so every reason is listed here: a misspelt one is a
 * type error, not a new series. A reason must be stable and must not embed packet data.
 */
export const DROP_REASONS = [
  'eth-bad-source', 'eth-not-ethernet-ii', 'eth-not-for-us', 'eth-truncated',
  'eth-unknown-ethertype',
  'arp-address-conflict', 'arp-bad-operation', 'arp-not-for-us', 'arp-queue-full',
  'arp-sender-mismatch', 'arp-truncated', 'arp-unresolved', 'arp-unsupported-type',
  'ipv4-bad-checksum', 'ipv4-bad-header-length', 'ipv4-bad-total-length', 'ipv4-bad-version',
  'ipv4-fragment-bad-length', 'ipv4-fragment-duplicate', 'ipv4-fragment-empty',
  'ipv4-fragment-inconsistent', 'ipv4-fragment-overlap', 'ipv4-fragment-too-large',
  'ipv4-fragment-too-many', 'ipv4-reassembly-evicted', 'ipv4-reassembly-limit',
  'ipv4-reassembly-timeout', 'ipv4-too-large-to-send', 'ipv4-truncated',
  'ipv4-unsupported-protocol',
  'ipv6-unsupported',
  'icmp-bad-checksum', 'icmp-bad-code', 'icmp-no-route', 'icmp-truncated', 'icmp-unhandled-type',
  'udp-bad-checksum', 'udp-bad-length', 'udp-bad-source', 'udp-broadcast-ignored',
  'udp-flow-evicted', 'udp-no-upstream', 'udp-too-large', 'udp-truncated',
  'tcp-bad-checksum', 'tcp-bad-data-offset', 'tcp-bad-source', 'tcp-half-open-evicted',
  'tcp-no-connection', 'tcp-no-upstream', 'tcp-option-overrun', 'tcp-port-zero', 'tcp-syn-fin',
  'tcp-to-broadcast', 'tcp-too-many-connections', 'tcp-truncated',
  'dhcp-bad-cookie', 'dhcp-bad-hardware-type', 'dhcp-chaddr-mismatch', 'dhcp-inform-no-ciaddr',
  'dhcp-no-message-type', 'dhcp-not-request', 'dhcp-option-bad-length', 'dhcp-option-overrun',
  'dhcp-pool-exhausted', 'dhcp-relayed-unsupported', 'dhcp-request-no-address', 'dhcp-truncated',
  'dhcp-unexpected-message-type',
  'dns-cache-entry-corrupt', 'dns-edns-bad-version', 'dns-forward-failed', 'dns-forward-timeout',
  'dns-internal-error', 'dns-name-label-too-long', 'dns-name-pointer-forward', 'dns-name-too-long',
  'dns-name-too-many-pointers', 'dns-name-truncated', 'dns-no-forwarder', 'dns-not-soa',
  'dns-opt-bad-name', 'dns-opt-duplicate', 'dns-opt-misplaced', 'dns-opt-option-overrun',
  'dns-qdcount-not-one', 'dns-query-is-response', 'dns-question-truncated', 'dns-rdata-truncated',
  'dns-record-truncated', 'dns-respond-failed', 'dns-soa-bad-length', 'dns-soa-overrun',
  'dns-too-many-pending', 'dns-too-many-waiters', 'dns-trailing-data', 'dns-truncated-header',
  'dns-upstream-malformed', 'dns-upstream-mismatch', 'dns-upstream-question-mismatch',
  'wisp-accept-bad-utf8', 'wisp-accept-short',
  'wisp-close-short', 'wisp-connect-bad-utf8', 'wisp-connect-short', 'wisp-connection-closed',
  'wisp-continue-short', 'wisp-info-extension-overrun', 'wisp-info-extension-short',
  'wisp-info-short', 'wisp-listen-result-short', 'wisp-listen-short', 'wisp-password-short',
  'wisp-publish-short', 'wisp-publish-unsupported', 'wisp-short-packet', 'wisp-too-many-streams',
  'wisp-udp-unsupported',
  'internal-error',
] as const;

export type DropReason = (typeof DROP_REASONS)[number];

export type Parsed<T> = T | DropReason;

export function isDrop<T>(result: Parsed<T>): result is DropReason {
  return typeof result === 'string';
}
