// Runs in every test file (vitest.config.ts setupFiles). Its afterAll comes after the file's own
// hooks, so every suite has cleaned up by then: it fails the file if a weft capture checked during
// cleanup (Netns.cleanup, weft-capture.ts) showed weft sending past its FIN, or could not be checked.
import { afterAll } from 'vitest';
import { takeUnreportedCaptureProblems } from './weft-capture';

afterAll(() => {
  const problems = takeUnreportedCaptureProblems();
  if (problems.length > 0) throw new Error(`weft's captures failed their check:\n${problems.join('\n')}`);
});
