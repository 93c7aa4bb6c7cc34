// Misbehaving steps in C: see wit/world.wit.
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "step.h"

bool exports_plugin_oob_write(step_context *ctx, step_patch_t *ret, step_error *err) {
  (void)ret;
  (void)err;
  step_context_free(ctx);
  // 16 bytes below 4 GiB: far past any memory a plugin is granted. `volatile` keeps the store.
  volatile uint8_t *p = (volatile uint8_t *)(uintptr_t)0xFFFFFFF0u;
  *p = 0x5A;
  abort();  // not reached: the store traps
}

bool exports_plugin_spin(step_context *ctx, step_patch_t *ret, step_error *err) {
  (void)ret;
  (void)err;
  step_context_free(ctx);
  volatile uint64_t n = 0;
  for (;;) n = n + 1;
}

// The blocks, chained, so the compiler cannot drop the allocations.
static void *volatile hoard;

bool exports_plugin_memory_bomb(step_context *ctx, step_patch_t *ret, step_error *err) {
  (void)ret;
  (void)err;
  step_context_free(ctx);
  for (;;) {
    char *block = malloc(1 << 20);
    if (!block) abort();  // the memory cap refused to grow the memory
    memset(block, 1, 1 << 20);
    *(void **)block = hoard;
    hoard = block;
  }
}
