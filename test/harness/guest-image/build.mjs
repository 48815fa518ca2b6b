#!/usr/bin/env node
// `npm run guest-image`: builds weft's test guests from Debian packages. Two targets:
//
// --target v86 (the default): weft's default test/demo guest for v86, into WEFT_GUEST_DIR, default
// <repo>/.cache/guest/
//   bzImage      the i386 kernel from Debian's newest `linux-image-<abi>-686`
//   initrd.img   a gzip'd newc cpio: busybox-static:i386 as /bin/busybox with its applet links, the
//                NIC modules (ne2k-pci, the virtio set) with their dependencies, and an /init that
//                brings eth0 up, runs udhcpc and prints WEFT-* markers on ttyS0 (see init.sh)
//   bios.bin     SeaBIOS from Debian's `seabios` (128 KiB); vgabios.bin its stdvga VGA BIOS
//   manifest.json  package versions, the recipe hash, file sizes and digests, the kernel cmdline
//   states/      v86 states the e2e harness saves (test/e2e/v86-harness.ts); removed on rebuild
//
// --target qemu: the x86-64 guest the QEMU tests boot (test/harness/qemu-guest.ts), into
// WEFT_QEMU_GUEST_DIR, default <repo>/.cache/guest-qemu/
//   bzImage      the kernel from Debian's newest `linux-image-<abi>-cloud-amd64`
//   initrd.img   the same initramfs with busybox-static:amd64, the virtio-net set and qemu_fw_cfg:
//                /init runs the script QEMU hands over as `-fw_cfg name=opt/weft/script,file=…`
//                after DHCP, then powers off (see init.sh)
//   manifest.json  as above
//
// Both folders are git-ignored: never commit kernels or BIOS images. A second run does nothing while
// the recipe (the files beside this script) and the package versions apt would pick are unchanged.
//
// Flags: --target v86|qemu · --force rebuild anyway · --update run `apt-get update` first ·
// --check only report whether the cached image is current (exit 0) or not (exit 1) · --help.
// Exit codes: 0 built or current · 1 failed · 3 this machine cannot build it (no apt, not root);
// the message says what to do.

import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';
import { CpioWriter, EXIT_FAILED, EXIT_UNSUPPORTED, GuestImageError, have, moduleIndex, resolveModuleSet } from './initramfs.mjs';

const HERE = dirname(fileURLToPath(import.meta.url));
const REPO_ROOT = resolve(HERE, '..', '..', '..');
const MANIFEST_FORMAT = 1;
const VIRTIO_NET = ['virtio', 'virtio_ring', 'virtio_pci', 'failover', 'net_failover', 'virtio_net'];

/**
 * What differs between the guests. `moduleSets`: the sets /init may load, each listed by its roots
 * (dependencies are added in load order); `firmware`: SeaBIOS goes in too (v86 needs it; QEMU
 * brings its own).
 */
const TARGETS = {
  v86: {
    dir: process.env.WEFT_GUEST_DIR || join(REPO_ROOT, '.cache', 'guest'),
    arch: 'i386',
    kernelFlavour: '686',
    cmdline: 'console=ttyS0 quiet cryptomgr.notests noisapnp',
    moduleSets: { ne2k: ['ne2k-pci', '8390'], virtio: VIRTIO_NET },
    firmware: true,
  },
  qemu: {
    dir: process.env.WEFT_QEMU_GUEST_DIR || join(REPO_ROOT, '.cache', 'guest-qemu'),
    arch: 'amd64',
    kernelFlavour: 'cloud-amd64',
    // panic=-1: a guest that panics reboots at once, which ends QEMU (-no-reboot) instead of hanging a test.
    cmdline: 'console=ttyS0 quiet cryptomgr.notests weft.nic=virtio panic=-1',
    moduleSets: { virtio: VIRTIO_NET, fwcfg: ['qemu_fw_cfg'] },
    firmware: false,
  },
};

/** The files beside this script that end up in the image; their hash (and the target's name) is the recipe's identity. */
const RECIPE_FILES = ['build.mjs', 'initramfs.mjs', 'init.sh', 'weft-dhcp.sh', 'udhcpc.script', 'inittab', 'profile'];

function parseTarget(argv) {
  const at = argv.indexOf('--target');
  const name = at >= 0 ? argv[at + 1] : 'v86';
  const target = TARGETS[name];
  if (!target) throw new GuestImageError(`--target ${name ?? ''}: expected one of ${Object.keys(TARGETS).join(', ')}`);
  return { name, ...target, dir: resolve(target.dir) };
}

function log(line) {
  process.stdout.write(`guest-image: ${line}\n`);
}

function sha256(data) {
  return createHash('sha256').update(data).digest('hex');
}

/** Runs a command, returning stdout; throws with its stderr on a non-zero exit unless `allowFail`. */
function run(cmd, args, { cwd, allowFail = false, quiet = true } = {}) {
  const r = spawnSync(cmd, args, { cwd, encoding: 'utf8', maxBuffer: 64 << 20, stdio: ['ignore', 'pipe', 'pipe'] });
  if (r.error) throw new GuestImageError(`${cmd} could not run: ${r.error.message}`);
  if (r.status !== 0 && !allowFail) {
    throw new GuestImageError(`${cmd} ${args.join(' ')} failed (exit ${r.status}):\n${(r.stderr || r.stdout).trim()}`);
  }
  if (!quiet && r.stderr.trim()) process.stderr.write(r.stderr);
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

const isRoot = () => process.getuid?.() === 0;

// ---------------------------------------------------------------------------------------------
// apt: architecture, package choice, download

function checkTools(target) {
  const missing = ['apt-get', 'apt-cache', 'dpkg', 'dpkg-deb'].filter((t) => !have(t));
  if (missing.length > 0) {
    throw new GuestImageError(
      `cannot build the guest image here: ${missing.join(', ')} not found. It is built from Debian packages, ` +
        `so run \`npm run guest-image -- --target ${target.name}\` on Debian or Ubuntu (as root, or with sudo ` +
        'for the one-time `dpkg --add-architecture i386 && apt-get update` of the v86 guest), or copy a built ' +
        `folder here and point ${target.name === 'v86' ? 'WEFT_GUEST_DIR' : 'WEFT_QEMU_GUEST_DIR'} at it ` +
        '(bzImage, initrd.img, manifest.json, and bios.bin for v86).',
      EXIT_UNSUPPORTED,
    );
  }
}

let native;
const nativeArch = () => (native ??= run('dpkg', ['--print-architecture']).stdout.trim());

/** Makes sure apt knows the target's packages' architecture; returns whether it was just added. */
function ensureArch({ arch }) {
  if (nativeArch() === arch) return false;
  const foreign = run('dpkg', ['--print-foreign-architectures']).stdout.split(/\s+/);
  if (foreign.includes(arch)) return false;
  if (!isRoot()) {
    throw new GuestImageError(
      `apt does not know the ${arch} architecture yet, and adding it needs root. Run once:\n` +
        `  sudo dpkg --add-architecture ${arch} && sudo apt-get update\n` +
        'then `npm run guest-image` again (or run it as root).',
      EXIT_UNSUPPORTED,
    );
  }
  log(`adding the ${arch} architecture to dpkg (dpkg --add-architecture ${arch})`);
  run('dpkg', ['--add-architecture', arch]);
  return true;
}

function aptUpdate() {
  if (!isRoot()) {
    log('not root: skipping apt-get update (run `sudo apt-get update` if packages are missing)');
    return;
  }
  log('apt-get update');
  const r = run('apt-get', ['update'], { allowFail: true });
  if (r.status !== 0) {
    const errors = r.stderr
      .split('\n')
      .filter((l) => /^(E|W):/.test(l))
      .slice(0, 4)
      .join('\n  ');
    log(`apt-get update reported errors; continuing with the indexes that did load:\n  ${errors}`);
  }
}

/**
 * apt's candidate versions for `pkgs` (e.g. "busybox-static:i386"), in one apt-cache run. apt names
 * a package of the native architecture without the suffix ("busybox-static" for ":amd64" on amd64).
 */
function candidates(pkgs) {
  const out = new Map();
  const r = run('apt-cache', ['policy', ...pkgs], { allowFail: true });
  let current;
  for (const line of r.stdout.split('\n')) {
    const head = /^(\S+):$/.exec(line);
    if (head) current = head[1];
    const m = /^\s+Candidate:\s*(\S+)/.exec(line);
    if (m && current && m[1] !== '(none)') out.set(current, m[1]);
  }
  return out;
}

/** Kernel package names `linux-image-X.Y.Z-ABI-<flavour>` (686, cloud-amd64), newest first. */
function kernelPackages({ name, kernelFlavour }) {
  const pinned = process.env[name === 'v86' ? 'WEFT_GUEST_KERNEL' : 'WEFT_QEMU_GUEST_KERNEL'];
  if (pinned) return [pinned];
  const r = run('apt-cache', ['search', '--names-only', `^linux-image-[0-9.]+-[0-9]+-${kernelFlavour}$`], { allowFail: true });
  const pattern = new RegExp(`^linux-image-[\\d.]+-\\d+-${kernelFlavour}$`);
  const names = [
    ...new Set(
      r.stdout
        .split('\n')
        .map((l) => l.split(' ')[0])
        .filter((n) => pattern.test(n)),
    ),
  ];
  const key = (n) => n.match(/\d+/g).map(Number);
  return names.sort((a, b) => {
    const ka = key(a);
    const kb = key(b);
    for (let i = 0; i < Math.max(ka.length, kb.length); i++) {
      if ((ka[i] ?? 0) !== (kb[i] ?? 0)) return (kb[i] ?? 0) - (ka[i] ?? 0);
    }
    return 0;
  });
}

/** The packages a target is built from: kernel, busybox (and seabios for v86). */
const packageKeys = (target) => (target.firmware ? ['kernel', 'busybox', 'seabios'] : ['kernel', 'busybox']);

/** The exact packages apt would download now: { kernel, busybox, seabios? } → { name, arch, version }. */
function resolvePackages(target) {
  const { arch } = target;
  const spec = (name) => (arch === nativeArch() ? name : `${name}:${arch}`);
  const kernels = kernelPackages(target);
  const versions = candidates([...kernels.map(spec), spec('busybox-static'), ...(target.firmware ? ['seabios'] : [])]);
  const found = {};
  const kernel = kernels.find((k) => versions.has(spec(k)));
  if (kernel) found.kernel = { name: kernel, arch, version: versions.get(spec(kernel)) };
  if (versions.has(spec('busybox-static'))) found.busybox = { name: 'busybox-static', arch, version: versions.get(spec('busybox-static')) };
  if (target.firmware && versions.has('seabios')) found.seabios = { name: 'seabios', arch: 'all', version: versions.get('seabios') };
  const missing = packageKeys(target).filter((k) => !found[k]);
  return { found, missing };
}

const describePkg = (p) => `${p.name}:${p.arch}=${p.version}`;

function download(pkgs, dir) {
  const specs = Object.values(pkgs).map((p) => `${p.name}:${p.arch === 'all' ? 'all' : p.arch}=${p.version}`);
  log(`apt-get download ${specs.join(' ')}`);
  // As root apt drops to the _apt user for downloads, which cannot write into our private temp dir.
  const sandbox = isRoot() ? ['-o', 'APT::Sandbox::User=root'] : [];
  run('apt-get', [...sandbox, 'download', ...specs.map((s) => s.replace(':all=', '='))], { cwd: dir });
  const debs = readdirSync(dir).filter((f) => f.endsWith('.deb'));
  const byName = {};
  for (const deb of debs) {
    const pkg = run('dpkg-deb', ['-f', join(dir, deb), 'Package']).stdout.trim();
    byName[pkg] = join(dir, deb);
  }
  for (const p of Object.values(pkgs)) {
    if (!byName[p.name]) throw new GuestImageError(`apt-get download did not produce ${p.name}`);
    p.sha256 = sha256(readFileSync(byName[p.name]));
    p.deb = byName[p.name];
  }
}

// ---------------------------------------------------------------------------------------------
// initramfs

/** Applet paths ("usr/bin/wget") from the static busybox itself, when this machine can run its code. */
function busyboxApplets(busybox) {
  const r = spawnSync(busybox, ['--list-full'], { encoding: 'utf8' });
  if (r.status !== 0 || !r.stdout) {
    log('cannot run this busybox here; /init will create the applet links at boot');
    return [];
  }
  return r.stdout
    .split('\n')
    .map((l) => l.trim())
    .filter(Boolean);
}

function buildInitramfs({ busybox, kernelRelease, modules, sets }) {
  const cpio = new CpioWriter();
  for (const d of ['bin', 'sbin', 'usr/bin', 'usr/sbin', 'etc/weft', 'proc', 'sys', 'dev', 'tmp', 'run', 'root', 'var/run']) {
    cpio.dir(d, d === 'tmp' ? 0o1777 : 0o755);
  }
  cpio.charDev('dev/console', 5, 1);
  cpio.charDev('dev/null', 1, 3, 0o666);
  cpio.charDev('dev/ttyS0', 4, 64);

  cpio.file('bin/busybox', readFileSync(busybox), 0o755);
  const applets = busyboxApplets(busybox);
  for (const path of applets) {
    if (path === 'bin/busybox') continue;
    cpio.symlink(path, '/bin/busybox');
  }
  if (!applets.includes('bin/sh')) cpio.symlink('bin/sh', '/bin/busybox');

  const recipe = (f) => readFileSync(join(HERE, f));
  cpio.file('init', recipe('init.sh'), 0o755);
  cpio.file('bin/weft-dhcp', recipe('weft-dhcp.sh'), 0o755);
  cpio.file('etc/udhcpc.script', recipe('udhcpc.script'), 0o755);
  cpio.file('etc/inittab', recipe('inittab'));
  cpio.file('etc/profile', recipe('profile'));
  cpio.file('etc/passwd', 'root:x:0:0:root:/root:/bin/sh\n');
  cpio.file('etc/group', 'root:x:0:\n');
  cpio.file('etc/hosts', '127.0.0.1 localhost\n');
  cpio.file('etc/resolv.conf', '');

  const modDir = `lib/modules/${kernelRelease}`;
  for (const [name, bytes] of modules) cpio.file(`${modDir}/${name}.ko`, bytes);
  for (const [set, order] of Object.entries(sets)) {
    cpio.file(`etc/weft/modules-${set}`, order.map((n) => `/${modDir}/${n}.ko\n`).join(''));
  }
  return gzipSync(cpio.finish(), { level: 9 });
}

// ---------------------------------------------------------------------------------------------
// cache

function recipeHash(target) {
  const h = createHash('sha256').update(`target ${target.name}\0`);
  for (const f of RECIPE_FILES)
    h.update(`${f}\0`)
      .update(readFileSync(join(HERE, f)))
      .update('\0');
  return h.digest('hex');
}

function readManifest(dir) {
  try {
    return JSON.parse(readFileSync(join(dir, 'manifest.json'), 'utf8'));
  } catch {
    return undefined;
  }
}

/** Why the cached image cannot be used as is (ignoring package updates), or undefined when it can. */
function staleReason(manifest, recipe, dir) {
  if (!manifest) return 'no image built yet';
  if (manifest.format !== MANIFEST_FORMAT) return 'the manifest format changed';
  if (manifest.recipe !== recipe) return 'the recipe (files in test/harness/guest-image/) changed';
  for (const f of Object.values(manifest.files ?? {})) {
    const p = join(dir, f.path);
    if (!existsSync(p) || statSync(p).size !== f.size) return `${f.path} is missing or changed`;
  }
  return undefined;
}

function samePackages(keys, a, b) {
  return keys.every((k) => a[k] && b[k] && a[k].name === b[k].name && a[k].version === b[k].version);
}

/** A lock directory so two builds (say `npm run guest-image` and a test run) do not interleave. */
async function withLock(dir, fn) {
  mkdirSync(dir, { recursive: true });
  const lock = join(dir, '.lock');
  const deadline = Date.now() + 15 * 60_000;
  for (;;) {
    try {
      mkdirSync(lock);
      writeFileSync(join(lock, 'pid'), String(process.pid));
      break;
    } catch (e) {
      if (e.code !== 'EEXIST') throw e;
      let text = '';
      try {
        text = readFileSync(join(lock, 'pid'), 'utf8');
      } catch {}
      const pid = /^\d+$/.test(text) ? Number(text) : NaN; // NaN: the holder is still writing it
      let alive = false;
      try {
        process.kill(pid, 0);
        alive = true;
      } catch (err) {
        alive = err.code === 'EPERM';
      }
      if (!alive && Number.isFinite(pid)) {
        rmSync(lock, { recursive: true, force: true });
        continue;
      }
      if (Date.now() > deadline) throw new GuestImageError(`${lock} is held by pid ${pid}; remove it if that build is gone`);
      if (!Number.isFinite(pid))
        await new Promise((r) => setTimeout(r, 200)); // being created
      else {
        log(`waiting for another build (pid ${pid}) to finish`);
        await new Promise((r) => setTimeout(r, 2000));
      }
    }
  }
  try {
    return await fn();
  } finally {
    rmSync(lock, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------------------------------------

function build(target, pkgs, recipe) {
  const { dir } = target;
  const work = mkdtempSync(join(tmpdir(), 'weft-guest-'));
  try {
    download(pkgs, work);
    const roots = {};
    for (const [key, p] of Object.entries(pkgs)) {
      roots[key] = join(work, `root-${key}`);
      log(`extracting ${describePkg(p)}`);
      run('dpkg-deb', ['-x', p.deb, roots[key]]);
      delete p.deb;
    }

    const modulesBase = join(roots.kernel, 'lib', 'modules');
    const releases = existsSync(modulesBase) ? readdirSync(modulesBase) : [];
    if (releases.length !== 1) throw new GuestImageError(`expected one kernel release in ${pkgs.kernel.name}, found ${releases.join(', ') || 'none'}`);
    const kernelRelease = releases[0];
    const vmlinuz = join(roots.kernel, 'boot', `vmlinuz-${kernelRelease}`);
    const kernel = readFileSync(vmlinuz);
    if (kernel.toString('latin1', 0x202, 0x206) !== 'HdrS') throw new GuestImageError(`${vmlinuz} is not a bzImage`);

    const modRoot = join(modulesBase, kernelRelease);
    const index = moduleIndex(modRoot);
    const builtinFile = join(modRoot, 'modules.builtin');
    const builtin = new Set(
      existsSync(builtinFile)
        ? readFileSync(builtinFile, 'utf8')
            .split('\n')
            .filter(Boolean)
            .map((l) => l.replace(/^.*\//, '').replace(/\.ko$/, '').replace(/-/g, '_'))
        : [],
    );
    const modules = new Map();
    const sets = {};
    for (const [set, wanted] of Object.entries(target.moduleSets)) {
      sets[set] = resolveModuleSet(wanted, index, builtin, modules);
      log(`modules for ${set}: ${sets[set].join(' → ')}`);
    }

    const busybox = join(roots.busybox, 'bin', 'busybox');
    if (!existsSync(busybox)) throw new GuestImageError(`${pkgs.busybox.name} has no /bin/busybox`);
    log('packing the initramfs');
    const initrd = buildInitramfs({ busybox, kernelRelease, modules, sets });

    const outputs = { bzimage: ['bzImage', kernel], initrd: ['initrd.img', initrd] };
    if (target.firmware) {
      const seabiosDir = join(roots.seabios, 'usr', 'share', 'seabios');
      const bios = readFileSync(join(seabiosDir, 'bios.bin'));
      if (bios.length !== 128 * 1024) throw new GuestImageError(`seabios bios.bin is ${bios.length} bytes, expected 131072`);
      outputs.bios = ['bios.bin', bios];
      outputs.vgaBios = ['vgabios.bin', readFileSync(join(seabiosDir, 'vgabios-stdvga.bin'))];
    }

    // Write everything into a staging folder, then move it into place with the manifest last.
    mkdirSync(dir, { recursive: true });
    const stage = mkdtempSync(join(dir, '.stage-'));
    const files = {};
    for (const [key, [name, data]] of Object.entries(outputs)) {
      writeFileSync(join(stage, name), data);
      files[key] = { path: name, size: data.length, sha256: sha256(data) };
    }
    for (const [name] of Object.values(outputs)) renameSync(join(stage, name), join(dir, name));
    // v86 states saved by the e2e harness hold the old kernel and initramfs in their memory.
    rmSync(join(dir, 'states'), { recursive: true, force: true });
    rmSync(stage, { recursive: true, force: true });
    const manifest = {
      format: MANIFEST_FORMAT,
      recipe,
      builtAt: new Date().toISOString(),
      kernelRelease,
      target: target.name,
      cmdline: target.cmdline,
      packages: pkgs,
      modules: sets,
      files,
    };
    writeFileSync(join(dir, 'manifest.json.tmp'), `${JSON.stringify(manifest, null, 2)}\n`);
    renameSync(join(dir, 'manifest.json.tmp'), join(dir, 'manifest.json'));
    return manifest;
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

function summary(m, dir) {
  const size = (k) => `${(m.files[k].size / 1024).toFixed(0)} KiB`;
  return (
    `kernel ${m.packages.kernel.name} ${m.packages.kernel.version} (${size('bzimage')}), initrd ${size('initrd')}, ` +
    `busybox ${m.packages.busybox.version}${m.packages.seabios ? `, seabios ${m.packages.seabios.version}` : ''} → ${relative(process.cwd(), dir) || '.'}`
  );
}

async function main(argv) {
  if (argv.includes('--help') || argv.includes('-h')) {
    const lines = readFileSync(fileURLToPath(import.meta.url), 'utf8')
      .split('\n')
      .slice(1);
    const header = lines.slice(
      0,
      lines.findIndex((l) => !l.startsWith('//')),
    );
    process.stdout.write(`${header.map((l) => l.replace(/^\/\/ ?/, '')).join('\n')}\n`);
    return 0;
  }
  const target = parseTarget(argv);
  const { dir } = target;
  const force = argv.includes('--force');
  const update = argv.includes('--update');
  const checkOnly = argv.includes('--check');
  const recipe = recipeHash(target);
  const aptThere = ['apt-get', 'apt-cache', 'dpkg', 'dpkg-deb'].every(have);

  const quickCheck = () => {
    const manifest = readManifest(dir);
    const stale = staleReason(manifest, recipe, dir);
    if (stale || force || update) return { manifest, stale: stale ?? (force ? '--force' : '--update') };
    if (!aptThere) return { manifest, note: 'apt is not available to look for newer packages' };
    const { found, missing } = resolvePackages(target);
    if (missing.length > 0) return { manifest, note: `apt has no candidate for ${missing.join(', ')} right now` };
    if (!samePackages(packageKeys(target), found, manifest.packages)) {
      return { manifest, stale: `newer packages: ${Object.values(found).map(describePkg).join(' ')}` };
    }
    return { manifest };
  };

  let state = quickCheck();
  if (checkOnly) {
    log(state.stale ? `not current: ${state.stale}` : `current: ${summary(state.manifest, dir)}`);
    return state.stale ? EXIT_FAILED : 0;
  }
  if (!state.stale) {
    log(`up to date: ${summary(state.manifest, dir)}${state.note ? ` (${state.note})` : ''}`);
    return 0;
  }

  return withLock(dir, async () => {
    state = quickCheck(); // another build may have finished while we waited
    if (!state.stale) {
      log(`up to date: ${summary(state.manifest, dir)}`);
      return 0;
    }
    log(`building the ${target.name} guest into ${dir} (${state.stale})`);
    checkTools(target);
    const added = ensureArch(target);
    let updated = false;
    if (added || update) {
      aptUpdate();
      updated = true;
    }
    let { found, missing } = resolvePackages(target);
    if (missing.length > 0 && !updated) {
      log(`apt has no candidate for ${missing.join(', ')}; refreshing the package lists`);
      aptUpdate();
      ({ found, missing } = resolvePackages(target));
    }
    if (missing.length > 0) {
      const what = { kernel: `linux-image-<abi>-${target.kernelFlavour}:${target.arch}`, busybox: `busybox-static:${target.arch}`, seabios: 'seabios' };
      throw new GuestImageError(
        `apt cannot find ${missing.map((k) => what[k]).join(', ')}. Check that Debian's main archive is in ` +
          '/etc/apt/sources.list(.d) and run `sudo apt-get update`, then try again.',
        isRoot() ? EXIT_FAILED : EXIT_UNSUPPORTED,
      );
    }
    log(`packages: ${Object.values(found).map(describePkg).join(' ')}`);
    const t0 = Date.now();
    const manifest = build(target, found, recipe);
    log(`built in ${((Date.now() - t0) / 1000).toFixed(1)} s: ${summary(manifest, dir)}`);
    return 0;
  });
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (e) => {
    process.stderr.write(`guest-image: ${e instanceof GuestImageError ? e.message : e.stack}\n`);
    process.exit(e instanceof GuestImageError ? e.exitCode : EXIT_FAILED);
  },
);
