// Misbehaving steps: each must end as a step error naming the plugin, the function and the step,
// without harming the host or other runs.

// Kept alive across the loop (and the call), so the collector can free nothing.
const hoard = [];

// Allocates 1 MiB buffers and strings forever.
export function memoryBomb(_ctx) {
  for (let i = 0; ; i++) {
    hoard.push(new Uint8Array(1 << 20).fill(i & 0xff));
    hoard.push(`${i}`.padEnd(1 << 19, 'x'));
  }
}

// Never returns.
export function spin(_ctx) {
  let n = 0;
  for (;;) {
    n = (n + 1) | 0;
  }
}

// Returns a patch as an object instead of JSON text: a mistake the host must name.
export function wrongType(_ctx) {
  return { greeting: 'hello' };
}
