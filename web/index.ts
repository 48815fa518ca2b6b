// weft for web pages: createNetwork() starts the stack in a worker; attachV86() connects a v86
// emulator to it; any other emulator can use network.attach(framePort).
export {
  createNetwork,
  type AttachOptions,
  type NetworkOptions,
  type WeftNetwork,
  type FlowSummary,
  type FramePath,
  type LanStats,
  type NetworkEvent,
  type NetworkSettings,
  type NetworkStats,
  type RelayState,
} from './network';
export { WeftEvent, type NetworkEventOf, type NetworkEventType, type WeftNetworkEventMap } from './network-events';
export { WeftError, type WeftErrorCode } from './weft-error';
export { attachV86, type NetworkAttachable, type V86Emulator, type V86AttachOptions, type V86Attachment, type V86Pacing } from './v86-adapter';
export type { FramePort } from './frame-port';
export type { ConnectTcpOptions, GuestTcpConnection } from './guest-connection';
export type { PreviewServer, ServePreviewOptions } from './preview-server';
export type { GuestPublication, PublishOptions } from './guest-publication';
export { loadSettings, saveSettings, saveImage, loadImage, downloadBlob, type StoredSettings } from './settings';
