// A plugin to start from: one action, one condition, one error handler.
//
// The build generates plugin.h from wit/world.wit: an export `foo-bar` of the world is the
// function `exports_plugin_foo_bar` here. stepflow/step.h has the helpers used below and
// stepflow/json.h a small JSON reader and writer.
#include <stdlib.h>

#include "step.h"

// An action: greets `name` and counts the greetings in a JSON merge patch (RFC 7386: keys it
// sets are set, nested objects merge, null deletes). With `fail_first` set, the first greeting
// fails once with a retryable error.
static bool greet(const step_context *ctx, step_patch_t *ret, step_error *err) {
  sj_value data;
  if (!step_data(ctx, &data, err)) return false;  // a fatal error: the document is not JSON
  sj_value name = sj_get(data, "name");           // kind SJ_NONE when missing
  if (name.kind != SJ_NONE && name.kind != SJ_STRING)
    return step_fatal(err, "`name` must be a string");  // no retry can fix it: the run fails
  uint64_t count = sj_u64_or(sj_get(data, "greetings"), 0) + 1;
  if (sj_is_true(sj_get(data, "fail_first")) && count == 1 && ctx->attempt == 1)
    return step_retryable(err, "the greeter is not ready yet");  // a `retry` may run again

  char *who = name.kind == SJ_STRING ? sj_string(name, NULL) : NULL;
  step_log(LOG_INFO, "greeting", "name", who ? who : "world", NULL);

  // The merge patch: {"greeting": "hello, <name>", "greetings": <count>}.
  sj_buf greeting = {0}, patch = {0};
  sj_puts(&greeting, "hello, ");
  sj_puts(&greeting, who ? who : "world");
  sj_puts(&patch, "{\"greeting\":");
  sj_put_str(&patch, greeting.p, greeting.n);
  sj_puts(&patch, ",\"greetings\":");
  sj_put_u64(&patch, count);
  sj_puts(&patch, "}");
  free(greeting.p);
  free(who);
  return step_patch(ret, &patch);  // the host frees the patch after the call
}

bool exports_plugin_greet(step_context *ctx, step_patch_t *ret, step_error *err) {
  bool ok = greet(ctx, ret, err);
  step_context_free(ctx);  // a step owns its arguments
  return ok;
}

// A condition: true once there are `want` greetings (1 when not set).
bool exports_plugin_ready(step_context *ctx, bool *ret, step_error *err) {
  sj_value data;
  bool ok = step_data(ctx, &data, err);
  if (ok) *ret = sj_u64_or(sj_get(data, "greetings"), 0) >= sj_u64_or(sj_get(data, "want"), 1);
  step_context_free(ctx);
  return ok;
}

// An error handler: asked only about retryable errors; retries while fewer than 3 attempts
// were made.
bool exports_plugin_should_retry(step_context *ctx, plugin_string_t *error, bool *ret,
                                 step_error *err) {
  (void)err;
  char *message = step_cstr(error);
  step_log(LOG_WARN, "the step failed", "error", message, NULL);
  *ret = ctx->attempt < 3;
  free(message);
  plugin_string_free(error);
  step_context_free(ctx);
  return true;
}
