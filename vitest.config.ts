import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts', 'core/**/*.test.ts'],
    // Fails a file whose weft captures show a byte past weft's FIN (test/harness/weft-capture.ts).
    setupFiles: ['test/harness/vitest-setup.ts'],
    // Integration tests share namespaces and CPU; run files one at a time.
    fileParallelism: false,
    testTimeout: 60_000,
    hookTimeout: 60_000,
  },
});
