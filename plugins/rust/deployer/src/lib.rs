//! The deployment workflow against a deployment API over HTTP (`examples/deployment-api`,
//! `cargo run -p deployment-api`).
//!
//! The data document gives `api`, the API's base URL (`http://127.0.0.1:8700`), and `version`,
//! what to deploy; the token comes from the secret `API_TOKEN` (an environment variable for the
//! plugin). `deploy` saves `rollout: {id, version}`, which `deployed` and `validate` read.
//!
//! Errors follow one rule: the host denying a request, a refused token or any other 4xx are
//! fatal (no retry fixes them); an unreachable API or a 5xx are retryable.

// The generated bindings pass each record field as an argument.
#![allow(clippy::too_many_arguments)]

wit_bindgen::generate!({
    world: "stepflow-examples:deployer/deployer",
    path: ["../../../wit", "wit"],
    generate_all,
});

use exports::stepflow_examples::deployer::checks;
use http_client::ErrorCode;
use serde_json::{Value, json};
use stepflow::plugin::host::{Level, log};

struct Deployer;

fn data(ctx: &StepContext) -> Result<Value, StepError> {
    serde_json::from_str(&ctx.data)
        .map_err(|e| StepError::Fatal(format!("the data document is not JSON: {e}")))
}

fn patch(value: Value) -> Result<Option<String>, StepError> {
    Ok(Some(value.to_string()))
}

/// A log line; the host tags it with the plugin, run and step.
fn info(message: &str) {
    log(Level::Info, message, &[]);
}

fn text<'a>(d: &'a Value, pointer: &str, what: &str) -> Result<&'a str, StepError> {
    d.pointer(pointer)
        .and_then(Value::as_str)
        .ok_or_else(|| StepError::Fatal(format!("`{}` must be {what}", &pointer[1..])))
}

/// The deployment API of the data document's `api`, called with the step's token and key.
struct Api<'a> {
    base: &'a str,
    token: String,
    key: &'a str,
}

/// What the API answered: the status and the JSON body (`null` when it is not JSON).
struct Answer {
    status: u16,
    body: Value,
}

impl<'a> Api<'a> {
    fn new(ctx: &'a StepContext, d: &'a Value) -> Result<Self, StepError> {
        let base = text(
            d,
            "/api",
            "the deployment API's base URL, e.g. http://127.0.0.1:8700",
        )?;
        let token = std::env::var("API_TOKEN").map_err(|_| {
            StepError::Fatal("API_TOKEN is not set: give the plugin the secret API_TOKEN".into())
        })?;
        Ok(Api {
            base: base.trim_end_matches('/'),
            token,
            key: &ctx.idempotency_key,
        })
    }

    /// Sends one request; the HTTP layer's errors are the step's errors, the status is the
    /// caller's to judge.
    fn send(&self, method: &str, path: &str, body: Option<Value>) -> Result<Answer, StepError> {
        let url = format!("{}{path}", self.base);
        let bearer = format!("Bearer {}", self.token);
        let mut headers = vec![
            ("authorization", bearer.as_str()),
            ("x-idempotency-key", self.key),
        ];
        let body = body.map(|b| b.to_string());
        if body.is_some() {
            headers.push(("content-type", "application/json"));
        }
        let response =
            http_client::request(method, &url, &headers, body.as_deref().map(str::as_bytes))
                .map_err(|e| {
                    let message = format!("{method} {url} failed: {}", http_client::describe(&e));
                    match e {
                        ErrorCode::HttpRequestDenied => StepError::Fatal(message),
                        _ => StepError::Retryable(message),
                    }
                })?;
        Ok(Answer {
            status: response.status,
            body: serde_json::from_slice(&response.body).unwrap_or(Value::Null),
        })
    }

    /// Sends one request and wants a 2xx (see [`Api::judge`]).
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, StepError> {
        let answer = self.send(method, path, body)?;
        self.judge(method, path, answer)
    }

    /// A 2xx answer's body; a 4xx is fatal, anything else retryable.
    fn judge(&self, method: &str, path: &str, answer: Answer) -> Result<Value, StepError> {
        if (200..300).contains(&answer.status) {
            return Ok(answer.body);
        }
        let why = answer.body["error"].as_str().unwrap_or("no reason given");
        let message = format!(
            "{method} {}{path} answered {}: {why}",
            self.base, answer.status
        );
        Err(if (400..500).contains(&answer.status) {
            StepError::Fatal(message)
        } else {
            StepError::Retryable(message)
        })
    }
}

/// The rollout `deploy` saved: its id and version.
fn rollout(d: &Value) -> Result<(&str, &str), StepError> {
    let missing = || StepError::Fatal("no `rollout` in the data document: run deploy first".into());
    let id = d["rollout"]["id"].as_str().ok_or_else(missing)?;
    let version = d["rollout"]["version"].as_str().ok_or_else(missing)?;
    Ok((id, version))
}

impl Guest for Deployer {
    fn prepare(ctx: StepContext) -> Result<Option<String>, StepError> {
        let d = data(&ctx)?;
        let api = Api::new(&ctx, &d)?;
        text(&d, "/version", "the version to deploy, a string")?;
        info(&format!("preparing to deploy with the API at {}", api.base));
        patch(json!({ "environment": { "prepared": true } }))
    }

    fn deploy(ctx: StepContext) -> Result<Option<String>, StepError> {
        let d = data(&ctx)?;
        let api = Api::new(&ctx, &d)?;
        let version = text(&d, "/version", "the version to deploy, a string")?;
        info(&format!(
            "deploying {version} (key {})",
            ctx.idempotency_key
        ));
        let body = api.call(
            "POST",
            "/v1/deployments",
            Some(json!({ "version": version })),
        )?;
        let id = text(&body, "/id", "the deployment's id")?;
        patch(json!({ "rollout": { "id": id, "version": version } }))
    }

    fn validate(ctx: StepContext) -> Result<Option<String>, StepError> {
        let d = data(&ctx)?;
        let api = Api::new(&ctx, &d)?;
        let (id, version) = rollout(&d)?;
        let path = format!("/v1/deployments/{id}/health");
        let answer = api.send("GET", &path, None)?;
        if answer.status == 503 {
            let why = answer.body["error"].as_str().unwrap_or("unhealthy");
            return Err(StepError::Retryable(format!(
                "health check failed on attempt {}: {why}",
                ctx.attempt
            )));
        }
        api.judge("GET", &path, answer)?;
        info(&format!("{version} is healthy"));
        patch(json!({ "current": version, "validated_on_attempt": ctx.attempt }))
    }

    fn cleanup(_ctx: StepContext) -> Result<Option<String>, StepError> {
        info("cleaning up");
        patch(json!({ "environment": null, "rollout": null, "cleaned": true }))
    }

    fn should_retry(ctx: StepContext, error: String) -> Result<bool, StepError> {
        let again = ctx.attempt < 3;
        log(
            Level::Warn,
            &format!("attempt {} failed: {error}; retry: {again}", ctx.attempt),
            &[],
        );
        Ok(again)
    }
}

impl checks::Guest for Deployer {
    /// Prepared, and the API answers its health check. An API that is not reachable yet is
    /// "not ready" (the wait asks again); a denied request or a refused token is fatal.
    fn ready(ctx: StepContext) -> Result<bool, StepError> {
        let d = data(&ctx)?;
        if d["environment"]["prepared"] != true {
            return Ok(false);
        }
        let api = Api::new(&ctx, &d)?;
        match api.call("GET", "/v1/health", None) {
            Ok(body) => Ok(body["ok"] == true),
            Err(StepError::Retryable(why)) => {
                log(
                    Level::Warn,
                    &format!(
                        "the deployment API is not ready ({why}); is `cargo run -p deployment-api` running?"
                    ),
                    &[],
                );
                Ok(false)
            }
            Err(fatal) => Err(fatal),
        }
    }

    fn should_deploy(ctx: StepContext) -> Result<bool, StepError> {
        let d = data(&ctx)?;
        let api = Api::new(&ctx, &d)?;
        let version = text(&d, "/version", "the version to deploy, a string")?;
        let body = api.call("GET", "/v1/current", None)?;
        let current = text(&body, "/version", "the running version")?;
        info(&format!("{current} runs now; wanted: {version}"));
        Ok(current != version)
    }

    fn deployed(ctx: StepContext) -> Result<bool, StepError> {
        let d = data(&ctx)?;
        let api = Api::new(&ctx, &d)?;
        let (id, _) = rollout(&d)?;
        let body = api.call("GET", &format!("/v1/deployments/{id}"), None)?;
        Ok(body["status"] == "live")
    }
}

export!(Deployer);
