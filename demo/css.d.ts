// esbuild bundles the stylesheets main.ts imports (into main.css); TypeScript only needs to know
// that such imports exist.
declare module '*.css';
