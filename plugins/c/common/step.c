// Helpers for writing step functions in C: see step.h.
#include "step.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// Hands the buffer's bytes to a returned string.
static plugin_string_t take(sj_buf *b) {
  plugin_string_t s = {(uint8_t *)b->p, b->n};
  if (b->n == 0) {  // post-return frees only non-empty strings
    free(b->p);
    s.ptr = NULL;
  }
  *b = (sj_buf){0};
  return s;
}

bool step_patch(step_patch_t *ret, sj_buf *json) {
  ret->is_some = true;
  ret->val = take(json);
  return true;
}

static bool set_error(step_error *err, uint8_t tag, const char *fmt, va_list ap) {
  va_list again;
  va_copy(again, ap);
  int n = vsnprintf(NULL, 0, fmt, ap);
  sj_buf m = {0};
  if (n > 0) {
    m.p = malloc((size_t)n + 1);
    if (!m.p) abort();
    vsnprintf(m.p, (size_t)n + 1, fmt, again);
    m.n = (size_t)n;
  }
  va_end(again);
  err->tag = tag;
  if (tag == STEPFLOW_PLUGIN_TYPES_STEP_ERROR_RETRYABLE)
    err->val.retryable = take(&m);
  else
    err->val.fatal = take(&m);
  return false;
}

bool step_retryable(step_error *err, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  set_error(err, STEPFLOW_PLUGIN_TYPES_STEP_ERROR_RETRYABLE, fmt, ap);
  va_end(ap);
  return false;
}

bool step_fatal(step_error *err, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  set_error(err, STEPFLOW_PLUGIN_TYPES_STEP_ERROR_FATAL, fmt, ap);
  va_end(ap);
  return false;
}

bool step_data(const step_context *ctx, sj_value *data, step_error *err) {
  char why[96];
  if (sj_parse((const char *)ctx->data.ptr, ctx->data.len, data, why, sizeof why)) return true;
  return step_fatal(err, "the data document is not JSON: %s", why);
}

void step_log(stepflow_plugin_host_level_t level, const char *message, ...) {
  enum { MAX_FIELDS = 16 };
  plugin_tuple2_string_string_t fields[MAX_FIELDS];
  size_t n = 0;
  va_list ap;
  va_start(ap, message);
  for (const char *key; (key = va_arg(ap, const char *)) != NULL;) {
    const char *value = va_arg(ap, const char *);
    if (n < MAX_FIELDS) {
      plugin_string_set(&fields[n].f0, key);
      plugin_string_set(&fields[n].f1, value ? value : "");
      n++;
    }
  }
  va_end(ap);
  // The host copies what it is given: borrowed strings are fine here.
  plugin_string_t m;
  plugin_string_set(&m, message);
  plugin_list_tuple2_string_string_t list = {fields, n};
  stepflow_plugin_host_log(level, &m, &list);
}

char *step_cstr(const plugin_string_t *s) {
  char *c = malloc(s->len + 1);
  if (!c) abort();
  if (s->len) memcpy(c, s->ptr, s->len);
  c[s->len] = 0;
  return c;
}
