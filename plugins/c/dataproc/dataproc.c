// A multi-stage data-processing flow against a simulated paged source: the C twin of
// plugins/rust/dataproc, with the same steps, patches, errors and log lines.
//
// The data document drives it: `pages` is how many pages the source has, `flaky` makes every
// page's transform fail on its first attempt. Everything is derived from the data document, so
// a run resumed after a crash ends exactly as an uninterrupted one.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "step.h"

// Fetches the next page: ten records whose values depend only on the page number.
static bool fetch_page(const step_context *ctx, step_patch_t *ret, step_error *err) {
  sj_value d;
  if (!step_data(ctx, &d, err)) return false;
  uint64_t page = sj_u64_or(sj_get(d, "page"), 0) + 1;
  sj_buf p = {0};
  sj_puts(&p, "{\"page\":");
  sj_put_u64(&p, page);
  sj_puts(&p, ",\"records\":[");
  for (uint64_t i = 0; i < 10; i++) {
    if (i) sj_puts(&p, ",");
    sj_put_u64(&p, page * 100 + i);
  }
  sj_puts(&p, "]}");
  char line[48];
  snprintf(line, sizeof line, "fetched page %llu", (unsigned long long)page);
  step_log(LOG_INFO, line, NULL);
  return step_patch(ret, &p);
}

// Transforms the current page's records and adds them to the running total; with `flaky` set,
// the first attempt on every page fails.
static bool transform(const step_context *ctx, step_patch_t *ret, step_error *err) {
  sj_value d;
  if (!step_data(ctx, &d, err)) return false;
  if (sj_is_true(sj_get(d, "flaky")) && ctx->attempt == 1) {
    sj_buf page = {0};
    sj_put_value(&page, sj_get(d, "page"));  // as JSON: `3`, or `null` when missing
    step_retryable(err, "the transform service timed out on page %s", page.p);
    free(page.p);
    return false;
  }
  uint64_t sum = 0, v;
  size_t pos = 0;
  sj_value record;
  while (sj_next(sj_get(d, "records"), &pos, &record))
    if (sj_u64(record, &v)) sum += v * 2;
  uint64_t total = sj_u64_or(sj_get(d, "total"), 0) + sum;
  uint64_t done = sj_u64_or(sj_get(d, "transformed_pages"), 0) + 1;
  sj_buf p = {0};
  sj_puts(&p, "{\"records\":null,\"total\":");
  sj_put_u64(&p, total);
  sj_puts(&p, ",\"transformed_pages\":");
  sj_put_u64(&p, done);
  sj_puts(&p, "}");
  return step_patch(ret, &p);
}

static bool last_page(const step_context *ctx, bool *ret, step_error *err) {
  sj_value d;
  if (!step_data(ctx, &d, err)) return false;
  *ret = sj_u64_or(sj_get(d, "page"), 0) >= sj_u64_or(sj_get(d, "pages"), 1);
  return true;
}

static bool summarize(const step_context *ctx, step_patch_t *ret, step_error *err) {
  sj_value d;
  if (!step_data(ctx, &d, err)) return false;
  char summary[64];
  snprintf(summary, sizeof summary, "%llu pages, total %llu",
           (unsigned long long)sj_u64_or(sj_get(d, "transformed_pages"), 0),
           (unsigned long long)sj_u64_or(sj_get(d, "total"), 0));
  step_log(LOG_INFO, summary, NULL);
  sj_buf p = {0};
  sj_puts(&p, "{\"summary\":");
  sj_put_str(&p, summary, strlen(summary));
  sj_puts(&p, "}");
  return step_patch(ret, &p);
}

// The exports (names from wit/world.wit): each owns its context and frees it.

bool exports_plugin_fetch_page(step_context *ctx, step_patch_t *ret, step_error *err) {
  bool ok = fetch_page(ctx, ret, err);
  step_context_free(ctx);
  return ok;
}

bool exports_plugin_transform(step_context *ctx, step_patch_t *ret, step_error *err) {
  bool ok = transform(ctx, ret, err);
  step_context_free(ctx);
  return ok;
}

bool exports_plugin_last_page(step_context *ctx, bool *ret, step_error *err) {
  bool ok = last_page(ctx, ret, err);
  step_context_free(ctx);
  return ok;
}

bool exports_plugin_summarize(step_context *ctx, step_patch_t *ret, step_error *err) {
  bool ok = summarize(ctx, ret, err);
  step_context_free(ctx);
  return ok;
}
