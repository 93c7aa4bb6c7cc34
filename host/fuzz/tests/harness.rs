//! The targets reach the code they are for: the `classify` generator makes components that
//! load, with every kind of step function and functions that are none; `store_rows` inputs
//! decode into records and entries as well as errors.

/// Deterministic pseudo-random inputs (xorshift).
fn inputs(count: usize, len: usize) -> Vec<Vec<u8>> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..count)
        .map(|_| {
            (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    (x >> 24) as u8
                })
                .collect()
        })
        .collect()
}

#[cfg(feature = "plugin")]
#[test]
fn generated_components_load_and_cover_every_kind() {
    use stepflow_plugin::{FunctionKind, Plugin, PluginOptions, Runtime, RuntimeConfig};

    let runtime = Runtime::new(RuntimeConfig {
        pooling: false,
        ..RuntimeConfig::default()
    })
    .unwrap();
    let (mut generated, mut loaded) = (0, 0);
    let mut kinds = Vec::new();
    let mut not_step_functions = 0;
    let mut errors = Vec::new();
    for input in inputs(60, 96) {
        let Some(wasm) = stepflow_fuzz::classify::generate(&input) else {
            continue;
        };
        generated += 1;
        let plugin = match Plugin::from_bytes(
            &runtime,
            "gen",
            &wasm,
            "gen.wasm",
            PluginOptions::default(),
        ) {
            Ok(plugin) => plugin,
            Err(e) => {
                errors.push(e.to_string());
                continue;
            }
        };
        loaded += 1;
        for export in plugin.exports() {
            match export.kind {
                Ok(kind) => kinds.push(kind),
                Err(_) => not_step_functions += 1,
            }
        }
    }
    assert!(
        generated >= 40,
        "only {generated} of 60 inputs generated a component"
    );
    assert!(
        loaded * 4 >= generated * 3,
        "only {loaded} of {generated} components loaded: {errors:#?}"
    );
    for kind in [
        FunctionKind::Action,
        FunctionKind::Condition,
        FunctionKind::ErrorHandler,
    ] {
        assert!(kinds.contains(&kind), "no generated {kind}: {kinds:?}");
    }
    assert!(not_step_functions > 0);
}

#[cfg(feature = "store")]
#[test]
fn store_rows_inputs_reach_the_decoder() {
    use stepflow_fuzz::store_rows::read_back;

    let mut total = stepflow_fuzz::store_rows::ReadBack::default();
    for input in inputs(300, 64)
        .iter()
        .chain([&vec![0u8; 64], &vec![1u8; 64]])
    {
        let seen = read_back(input);
        total.runs += seen.runs;
        total.entries += seen.entries;
        total.errors += seen.errors;
    }
    stepflow_fuzz::store_rows::remove_files();
    assert!(total.runs > 0, "{total:?}");
    assert!(total.entries > 0, "{total:?}");
    assert!(total.errors > 0, "{total:?}");
}
