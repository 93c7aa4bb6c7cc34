//! The JSON Schema of flow files, derived from the types the parser fills (see `document.rs`).

use schemars::Schema;
use schemars::generate::SchemaSettings;
use serde_json::{Map, Value};

use crate::document::FlowDoc;

/// The JSON Schema (draft 7, which editors' YAML plugins understand) that flow files follow.
pub fn schema() -> Value {
    let settings = SchemaSettings::draft07().with(|s| {
        // First, so that draft 7's `$ref`-siblings rewrite sees the result.
        s.transforms.insert(0, Box::new(not_nullable));
    });
    settings
        .into_generator()
        .into_root_schema_for::<FlowDoc>()
        .to_value()
}

/// A key that is present must hold a value (the parser refuses `key: ~`), so optional keys are
/// not nullable: take out the `null` that schemars adds for `Option` fields.
fn not_nullable(schema: &mut Schema) {
    if let Some(object) = schema.as_object_mut() {
        walk(object);
    }
}

fn walk(object: &mut Map<String, Value>) {
    if let Some(Value::Object(properties)) = object.get_mut("properties") {
        for property in properties.values_mut() {
            if let Value::Object(property) = property {
                strip_null(property);
            }
        }
    }
    for child in object.values_mut() {
        visit(child);
    }
}

fn visit(value: &mut Value) {
    match value {
        Value::Object(object) => walk(object),
        Value::Array(items) => items.iter_mut().for_each(visit),
        _ => {}
    }
}

fn strip_null(property: &mut Map<String, Value>) {
    if let Some(Value::Array(types)) = property.get("type") {
        let rest: Vec<Value> = types
            .iter()
            .filter(|t| t.as_str() != Some("null"))
            .cloned()
            .collect();
        let types = match <[Value; 1]>::try_from(rest) {
            Ok([only]) => only,
            Err(rest) => Value::Array(rest),
        };
        property.insert("type".to_string(), types);
    }
    if let Some(Value::Array(any_of)) = property.get_mut("anyOf") {
        any_of.retain(|s| s.get("type").and_then(Value::as_str) != Some("null"));
        if let [Value::Object(only)] = any_of.as_slice() {
            let only = only.clone();
            property.remove("anyOf");
            for (key, value) in only {
                property.entry(key).or_insert(value);
            }
        }
    }
    if property.get("default") == Some(&Value::Null) {
        property.remove("default");
    }
}
