// Just enough types for the parts of @mercuryworkshop/wisp-js (plain JavaScript) the interop tests use.

declare module '@mercuryworkshop/wisp-js/client' {
  export namespace client {
    class ClientStream {
      onopen: () => void;
      onclose: (reason: number) => void;
      onmessage: (data: Uint8Array) => void;
      send(data: Uint8Array): void;
      close(reason?: number): void;
    }
    class ClientConnection {
      constructor(url: string, options?: { wisp_version?: 1 | 2; wisp_extensions?: unknown[] | null });
      onopen: () => void;
      onclose: () => void;
      onerror: () => void;
      wisp_version: number;
      server_motd: string | null;
      max_buffer_size: number | null;
      create_stream(hostname: string, port: number, type?: 'tcp' | 'udp'): ClientStream;
      close(): void;
    }
  }
  export namespace extensions {
    class UDPExtension {
      constructor(config: { client_config?: object; server_config?: object });
    }
    class MOTDExtension {
      constructor(config: { client_config?: object; server_config?: object });
    }
    class PasswordAuthExtension {
      constructor(config: { client_config?: { username: string; password: string }; server_config?: { required?: number } });
    }
  }
}

declare module '@mercuryworkshop/wisp-js/server' {
  import type { IncomingMessage } from 'node:http';
  import type { Duplex } from 'node:stream';
  export namespace server {
    function routeRequest(req: IncomingMessage, socket: Duplex, head: Buffer, options?: object): void;
    const options: {
      allow_loopback_ips: boolean;
      allow_private_ips: boolean;
      wisp_version: 1 | 2;
      wisp_motd: string | null;
      [k: string]: unknown;
    };
  }
  export namespace logging {
    const NONE: number;
    function set_level(level: number): void;
  }
}
