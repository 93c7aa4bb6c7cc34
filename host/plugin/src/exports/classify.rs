//! Tells step functions from other exports by their signatures.
//!
//! Every step function takes the `stepflow:plugin` `step-context` record first and returns
//! `result<_, step-error>`; the rest of the signature says which kind it is:
//! an action returns `option<string>` (a JSON patch, or nothing), a condition returns `bool`,
//! and an error handler takes the error's message as a second `string` parameter and returns
//! `bool` (whether to try again). Step functions are synchronous. Anything else is an export, but not a step function, and the
//! reason is kept so a lookup can say why it cannot be used.

use stepflow_model::FunctionKind;
use wasmtime::component::types::{ComponentFunc, Type};

/// A field of `step-context` and a check of its type.
type FieldCheck = (&'static str, fn(&Type) -> bool);

/// The fields of `step-context`, in the WIT's order: a record that differs is not ours.
const CONTEXT_FIELDS: [FieldCheck; 7] = [
    ("run-id", |t| matches!(t, Type::String)),
    ("flow", |t| matches!(t, Type::String)),
    ("step", |t| matches!(t, Type::String)),
    ("attempt", |t| matches!(t, Type::U32)),
    ("idempotency-key", |t| matches!(t, Type::String)),
    ("redelivered", |t| matches!(t, Type::Bool)),
    ("data", |t| matches!(t, Type::String)),
];

/// Classifies a function, or says why it is not a step function.
pub(crate) fn classify(func: &ComponentFunc) -> Result<FunctionKind, String> {
    if func.async_() {
        return Err("it is an async function; step functions are synchronous".into());
    }
    let params: Vec<(&str, Type)> = func.params().collect();
    let results: Vec<Type> = func.results().collect();
    let Some((_, first)) = params.first() else {
        return Err("it takes no step-context".into());
    };
    if !is_step_context(first) {
        return Err("its first parameter is not a stepflow:plugin step-context".into());
    }
    let [Type::Result(result)] = results.as_slice() else {
        return Err("it does not return result<_, step-error>".into());
    };
    if !result.err().as_ref().is_some_and(is_step_error) {
        return Err("its error type is not a stepflow:plugin step-error".into());
    }
    let ok = result.ok();
    match (params.len(), ok) {
        (1, Some(Type::Option(o))) if matches!(o.ty(), Type::String) => Ok(FunctionKind::Action),
        (1, Some(Type::Bool)) => Ok(FunctionKind::Condition),
        (2, Some(Type::Bool)) if matches!(params[1].1, Type::String) => {
            Ok(FunctionKind::ErrorHandler)
        }
        (1, _) => Err("it returns neither option<string> (an action) nor bool (a condition)".into()),
        (2, _) => Err(
            "with two parameters it must be an error handler: (step-context, string) -> result<bool, step-error>"
                .into(),
        ),
        _ => Err(format!("it takes {} parameters; step functions take one or two", params.len())),
    }
}

fn is_step_context(ty: &Type) -> bool {
    let Type::Record(record) = ty else {
        return false;
    };
    let fields: Vec<_> = record.fields().collect();
    fields.len() == CONTEXT_FIELDS.len()
        && fields
            .iter()
            .zip(CONTEXT_FIELDS)
            .all(|(f, (name, ok))| f.name == name && ok(&f.ty))
}

fn is_step_error(ty: &Type) -> bool {
    let Type::Variant(variant) = ty else {
        return false;
    };
    let cases: Vec<_> = variant.cases().collect();
    cases.len() == 2
        && cases
            .iter()
            .zip(["retryable", "fatal"])
            .all(|(c, name)| c.name == name && matches!(c.ty, Some(Type::String)))
}
