// `imgdedup apply` (issue 9): an update of several hundred real files (tens of MB: new
// files, replaced files, symlinks; see lib/applyImage.mjs) applied to a 1 GiB ext4
// filesystem inside a qcow2, as an overlay and as a complete image, against
// `debugfs -w -f` writing the same update into a raw copy of the filesystem (the copy is
// made and written back outside the timing, and so is whatever either side wrote before a
// run). Paired, alternating runs; time and peak RSS as ratios. Timed beside them: the floor
// (a Node process that only reads the update and writes and fsyncs an output of the
// overlay's size) and our start-up alone, so the gap to debugfs splits into what any Node
// program pays and what our filesystem work costs.
// Goal: faster than debugfs, peak RSS under 256 MiB whatever the image size.
// Before timing, the outputs are checked to be equivalent: strict e2fsck on ours,
// `qemu-img check` on the overlay, and files, symlinks and attributes as debugfs reads them
// from both outputs equal to the update tree.
import { lstatSync, mkdtempSync, readFileSync, readlinkSync, rmSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { applyBenchInputs, sizes } from './lib/applyImage.mjs';
import { comparePaired, sh } from './lib/measure.mjs';

const cli = new URL('../dist/cli.cjs', import.meta.url).pathname;
const RSS_GOAL_KIB = 256 << 10;
const scratch = mkdtempSync(join(tmpdir(), 'imgdedup-bench-apply-'));

/** Strict e2fsck -fn: exit 0 and nothing but the version, Pass and summary lines. */
function strictClean(raw) {
  const r = spawnSync('e2fsck', ['-fn', raw], { encoding: 'utf8', env: { ...process.env, E2FSCK_CONFIG: '/dev/null' } });
  const extra = (r.stdout + r.stderr).split('\n').filter((l) => l.trim() !== '' && !/^(e2fsck \d|Pass [1-5]: |\S+: \d+\/\d+ files )/.test(l));
  return { clean: r.status === 0 && extra.length === 0, extra };
}

/** What debugfs reads of `paths` in `raw`: content (dumped), mode, uid, gid, mtime, symlink target. */
function readBack(raw, paths, tag) {
  const dumps = paths.map((_, i) => join(scratch, `${tag}-${i}`));
  const cmds = paths.flatMap((p, i) => [`stat "${p}"`, `dump "${p}" ${dumps[i]}`]);
  const r = spawnSync('debugfs', ['-f', '-', raw], { input: cmds.join('\n') + '\n', encoding: 'utf8', maxBuffer: 1 << 26 });
  const outs = r.stdout.split(/^debugfs: /m).slice(1);
  return paths.map((p, i) => {
    const stat = outs[2 * i] ?? '';
    const field = (re) => re.exec(stat)?.[1];
    const link = field(/Fast link dest: "(.*)"/);
    let content;
    try {
      content = link === undefined ? readFileSync(dumps[i]).toString('base64') : undefined;
    } catch {
      content = '<not dumped>';
    }
    return { path: p, mode: field(/Mode:\s+(\d+)/), uid: field(/User:\s+(\d+)/), gid: field(/Group:\s+(\d+)/), mtime: field(/mtime: 0x([0-9a-f]{8})/), link, content };
  });
}

/** The same facts from the update tree on the host. */
function expected(updates, paths) {
  return paths.map((p) => {
    const host = join(updates, p);
    const st = lstatSync(host);
    const link = st.isSymbolicLink() ? readlinkSync(host) : undefined;
    return {
      path: p,
      mode: `0${(st.mode & 0o7777).toString(8).padStart(3, '0')}`.replace(/^0+(?=\d{4})/, ''),
      uid: String(st.uid),
      gid: String(st.gid),
      mtime: Math.floor(st.mtimeMs / 1000).toString(16).padStart(8, '0'),
      link,
      content: link === undefined ? readFileSync(host).toString('base64') : undefined,
    };
  });
}

try {
  const t0 = Date.now();
  const inp = applyBenchInputs();
  const files = inp.newFiles.length + inp.replaced.length + inp.symlinks.length;
  console.log(`\n## apply: ${files} paths (${inp.newFiles.length} new files, ${inp.replaced.length} replaced, ${inp.symlinks.length} symlinks), ${(inp.updateBytes / 1e6).toFixed(1)} MB, into a 1 GiB ext4 (${(sizes(inp.raw).allocated / 2 ** 20).toFixed(0)} MiB used) in qcow2 (inputs ready in ${((Date.now() - t0) / 1000).toFixed(0)} s; cached in ${inp.dir})`);

  const overlay = join(scratch, 'out-overlay.qcow2');
  const complete = join(scratch, 'out-complete.qcow2');
  const copy = join(scratch, 'peer.raw');
  const cleanOut = () => {
    rmSync(overlay, { force: true });
    rmSync(complete, { force: true });
  };
  // Before each of our runs too: nothing earlier is written back inside a timing.
  const settle = () => {
    cleanOut();
    sh('sync', []);
  };
  const ourOverlay = { name: 'imgdedup apply --overlay', cmd: process.execPath, args: [cli, 'apply', '--overlay', inp.qcow2, inp.updates, '-o', overlay], before: settle, after: cleanOut };
  const ourComplete = { name: 'imgdedup apply (complete image)', cmd: process.execPath, args: [cli, 'apply', inp.qcow2, inp.updates, '-o', complete], before: settle, after: cleanOut };
  const debugfs = {
    name: 'debugfs -w -f (raw copy)',
    cmd: 'debugfs',
    args: ['-w', '-f', inp.script, copy],
    // The copy is made, written back (debugfs's closing fsync would otherwise flush the
    // whole copy inside its timing) and removed outside the timing.
    before: () => {
      sh('cp', ['--sparse=always', inp.raw, copy]);
      sh('sync', []);
    },
    after: () => rmSync(copy, { force: true }),
  };

  // Like with like: both outputs hold the update, and ours is strictly clean.
  sh(ourOverlay.cmd, ourOverlay.args);
  sh(ourComplete.cmd, ourComplete.args);
  debugfs.before();
  const dbg = spawnSync(debugfs.cmd, debugfs.args, { encoding: 'utf8', maxBuffer: 1 << 28 });
  const dbgErrors = dbg.stderr.split('\n').filter((l) => l.trim() !== '' && !/^debugfs \d/.test(l));
  if (dbg.status !== 0 || dbgErrors.length > 0) throw new Error(`debugfs script failed: ${dbgErrors.slice(0, 5).join('\n')}`);
  const overlayRaw = join(scratch, 'overlay.raw');
  const completeRaw = join(scratch, 'complete.raw');
  sh('qemu-img', ['check', overlay]);
  sh('qemu-img', ['convert', '-O', 'raw', overlay, overlayRaw]);
  sh('qemu-img', ['convert', '-O', 'raw', complete, completeRaw]);
  for (const raw of [overlayRaw, completeRaw]) {
    const fsck = strictClean(raw);
    if (!fsck.clean) throw new Error(`e2fsck -fn on our output ${raw}:\n${fsck.extra.join('\n')}`);
  }
  const peerFsck = strictClean(copy);
  const sample = [...inp.newFiles.filter((_, i) => i % 50 === 0), ...inp.replaced.filter((_, i) => i % 20 === 0), ...inp.symlinks.slice(0, 3)];
  const want = JSON.stringify(expected(inp.updates, sample));
  const differ = (got) => sample.filter((_, i) => JSON.stringify(got[i]) !== JSON.stringify(JSON.parse(want)[i]));
  for (const [what, raw] of [['our overlay', overlayRaw], ['our complete image', completeRaw], ["debugfs's copy", copy]]) {
    const bad = differ(readBack(raw, sample, what.replace(/\W/g, '')));
    if (bad.length > 0) throw new Error(`${what} differs from the update tree at ${bad.join(', ')}`);
  }
  console.log(`outputs checked: ${sample.length} paths (content, mode, uid, gid, mtime, symlink target) as debugfs reads them equal the update tree in both our outputs and in debugfs's; ours strictly e2fsck-clean, the overlay qemu-img-check clean; debugfs's output ${peerFsck.clean ? 'strictly clean too' : `not strictly clean (${peerFsck.extra.length} e2fsck lines, e.g. ${peerFsck.extra[0]})`}`);
  const overlayBytes = sizes(overlay).allocated;
  const completeBytes = sizes(complete).allocated;
  console.log(`overlay file: ${(overlayBytes / 2 ** 20).toFixed(1)} MiB allocated; complete image: ${(completeBytes / 2 ** 20).toFixed(1)} MiB`);
  debugfs.after();
  rmSync(overlayRaw);
  rmSync(completeRaw);
  cleanOut();

  // What no Node program can avoid, timed beside debugfs: Node's start, reading the
  // update's files, writing and fsyncing as many bytes as our overlay holds; and our own
  // start-up (loading the program, no work).
  const floorOut = join(scratch, 'floor.out');
  const floorOf = (bytes, what) => ({ name: `floor: node reading the update, writing+fsyncing ${what}`, cmd: process.execPath, args: [new URL('./lib/nodeFloor.mjs', import.meta.url).pathname, inp.updates, floorOut, String(bytes)], before: () => sh('sync', []), after: () => rmSync(floorOut, { force: true }) });
  const startup = { name: 'imgdedup --version (start-up only)', cmd: process.execPath, args: [cli, '--version'] };

  for (const [side, floor] of [
    [ourOverlay, floorOf(overlayBytes, "the overlay's size")],
    [ourComplete, floorOf(completeBytes, "the complete image's size")],
  ]) {
    console.log(`\n### ${side.name} vs ${debugfs.name}`);
    const r = comparePaired(side, [debugfs, floor, startup], { goal: '< 1.00x' });
    const peer = r.peers[0];
    const rssOk = r.oursRssKiB < RSS_GOAL_KIB;
    console.log(`  peak RSS ours ${(r.oursRssKiB / 1024).toFixed(0)} MiB, debugfs ${(peer.rssKiB / 1024).toFixed(0)} MiB: ratio ${(r.oursRssKiB / peer.rssKiB).toFixed(2)}x (goal: under 256 MiB: ${rssOk ? 'met' : 'NOT met'})`);
    console.log(`  time: ${peer.ratio < 1 ? 'faster than debugfs (goal met)' : 'slower than debugfs (goal NOT met)'}`);
    const [, fl, st] = r.peers;
    console.log(`  floor: ${fl.median.toFixed(2)} s is ${(fl.median / peer.median).toFixed(2)}x debugfs's median before any filesystem work, and start-up alone ${st.median.toFixed(2)} s; ours spends ${(r.ours - fl.median).toFixed(2)} s above the floor`);
  }
} finally {
  rmSync(scratch, { recursive: true, force: true });
}
