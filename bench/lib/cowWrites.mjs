// The bench's scattered writes, the same for imgdedup and qemu-io: seeded offsets
// anywhere on the disk (most not sector-aligned), 4 KiB each, a pattern byte each.
export function* cowWrites(n, size) {
  let x = 0x9e3779b9;
  const next = () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) / 4294967296;
  };
  for (let i = 0; i < n; i++) {
    const length = 4096;
    const offset = Math.floor(next() * ((size - length) / 100)) * 100;
    yield { offset, length, pattern: (i % 255) + 1 };
  }
}
