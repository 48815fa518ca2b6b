/** The command line is wrong: the message says what to change. Exit code 2. */
export class UsageError extends Error {
  readonly exitCode = 2;
  constructor(message: string) {
    super(message);
    this.name = 'UsageError';
  }
}

/** A documented flag or value that a later version of weft will implement. Exit code 2. */
export class NotImplementedError extends Error {
  readonly exitCode = 2;
  constructor(what: string) {
    super(`${what} is not implemented yet`);
    this.name = 'NotImplementedError';
  }
}
