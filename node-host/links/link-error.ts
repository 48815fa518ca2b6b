/** A link could not be opened or stopped working; the message says what to fix. */
export class LinkError extends Error {
  constructor(
    message: string,
    readonly code = 'WEFT_LINK',
  ) {
    super(message);
    this.name = 'LinkError';
  }
}
