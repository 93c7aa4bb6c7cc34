//! Steps that do nothing, for measuring what a plugin call costs.

// The generated bindings pass each record field as an argument.
#![allow(clippy::too_many_arguments)]

wit_bindgen::generate!({
    world: "stepflow-examples:noop/noop",
    path: ["../../../wit", "wit"],
    generate_all,
});

struct Noop;

impl Guest for Noop {
    fn noop(_ctx: StepContext) -> Result<Option<String>, StepError> {
        Ok(None)
    }

    fn yes(_ctx: StepContext) -> Result<bool, StepError> {
        Ok(true)
    }
}

export!(Noop);
