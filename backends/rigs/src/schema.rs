//! One checker for the two API descriptions the Batch stand-ins hold requests and answers to:
//! Azure Batch's Swagger 2.0 specification and Google Batch's discovery document (excerpts of
//! each, in `fixtures/`). Both are JSON Schema at heart (`$ref`, objects with their properties,
//! maps, arrays, scalar types with formats and enums); a [`Dialect`] says where they differ.

use serde_json::{Value, json};

/// What tells one API description's schemas from the other's.
pub(crate) struct Dialect {
    /// What a `$ref` holds before the definition's name: `#/definitions/` in Swagger, nothing
    /// in a discovery document.
    pub ref_prefix: &'static str,
    /// Checks a string of a `format` this description defines; `Some(what is wrong)`.
    pub string_format: fn(format: &str, value: &str) -> Option<String>,
}

/// Checks a request `value` against the definition `name` of `definitions`; each violation
/// is one line, starting with where it is (`at`, then the path into `value`). Besides JSON
/// Schema's rules: no property the schema does not define (unless `additionalProperties`
/// allows it), and none it marks `readOnly` (output only). An object schema without
/// properties is a definition the excerpt did not copy: it accepts what it holds.
pub(crate) fn check(
    dialect: &Dialect,
    definitions: &Value,
    name: &str,
    value: &Value,
    at: &str,
) -> Vec<String> {
    walk(dialect, definitions, name, value, at, true)
}

/// [`check`] for an answer (what the service sends back), where `readOnly` properties belong.
pub(crate) fn check_answer(
    dialect: &Dialect,
    definitions: &Value,
    name: &str,
    value: &Value,
    at: &str,
) -> Vec<String> {
    walk(dialect, definitions, name, value, at, false)
}

fn walk(
    dialect: &Dialect,
    definitions: &Value,
    name: &str,
    value: &Value,
    at: &str,
    request: bool,
) -> Vec<String> {
    let mut walk = Walk {
        dialect,
        definitions,
        request,
        errors: vec![],
    };
    walk.value(
        &json!({ "$ref": format!("{}{name}", dialect.ref_prefix) }),
        value,
        at,
    );
    walk.errors
}

struct Walk<'a> {
    dialect: &'a Dialect,
    definitions: &'a Value,
    /// A request, which must not set what the schema marks `readOnly`.
    request: bool,
    errors: Vec<String>,
}

impl Walk<'_> {
    fn value(&mut self, schema: &Value, value: &Value, at: &str) {
        if self.request && schema.get("readOnly") == Some(&Value::Bool(true)) {
            self.errors
                .push(format!("{at}: output only, a request does not set it"));
            return;
        }
        if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
            let name = r.trim_start_matches(self.dialect.ref_prefix);
            match self.definitions.get(name) {
                Some(def) => self.value(def, value, at),
                None => self
                    .errors
                    .push(format!("{at}: the excerpt has no definition {name}")),
            }
            return;
        }
        let kind = match schema.get("type").and_then(Value::as_str) {
            Some(kind) => kind,
            None if schema.get("properties").is_some() => "object",
            None => "",
        };
        match kind {
            "object" => self.object(schema, value, at),
            "array" => self.array(schema, value, at),
            _ => {
                if let Some(error) = self.scalar(kind, schema, value, at) {
                    self.errors.push(error);
                }
            }
        }
    }

    fn object(&mut self, schema: &Value, value: &Value, at: &str) {
        let Some(object) = value.as_object() else {
            self.errors
                .push(format!("{at}: expected an object, got {value}"));
            return;
        };
        let required = schema.get("required").and_then(Value::as_array);
        for name in required.into_iter().flatten().filter_map(Value::as_str) {
            if !object.contains_key(name) {
                self.errors
                    .push(format!("{at}: the required property {name} is missing"));
            }
        }
        let properties = schema.get("properties").and_then(Value::as_object);
        // A schema for the other keys (a map's values), or `true`: any other key is fine.
        let additional = schema.get("additionalProperties");
        let stub = properties.is_none() && additional.is_none();
        for (key, v) in object {
            let sub = format!("{at}.{key}");
            match (properties.and_then(|p| p.get(key)), additional) {
                (Some(s), _) => self.value(s, v, &sub),
                (None, Some(s)) if s.is_object() => self.value(s, v, &sub),
                (None, Some(Value::Bool(true))) => {}
                (None, _) if stub => {}
                (None, _) => self.errors.push(format!(
                    "{sub}: the API description defines no such property"
                )),
            }
        }
    }

    fn array(&mut self, schema: &Value, value: &Value, at: &str) {
        let Some(items) = value.as_array() else {
            self.errors
                .push(format!("{at}: expected an array, got {value}"));
            return;
        };
        let any = json!({});
        let item = schema.get("items").unwrap_or(&any);
        for (n, v) in items.iter().enumerate() {
            self.value(item, v, &format!("{at}[{n}]"));
        }
    }

    /// What is wrong with a scalar, if anything (one error at most: a wrong type says nothing
    /// of the format).
    fn scalar(&self, kind: &str, schema: &Value, value: &Value, at: &str) -> Option<String> {
        let format = schema.get("format").and_then(Value::as_str);
        match kind {
            "string" => {
                let Some(s) = value.as_str() else {
                    return Some(format!("{at}: expected a string, got {value}"));
                };
                if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
                    && !allowed.iter().any(|a| a.as_str() == Some(s))
                {
                    let allowed = Value::Array(allowed.clone());
                    return Some(format!("{at}: {s:?} is not one of {allowed}"));
                }
                let wrong = (self.dialect.string_format)(format?, s)?;
                Some(format!("{at}: {wrong}"))
            }
            "integer" => {
                let Some(n) = value.as_i64() else {
                    return Some(format!("{at}: expected an integer, got {value}"));
                };
                (format == Some("int32") && i32::try_from(n).is_err())
                    .then(|| format!("{at}: {n} does not fit an int32"))
            }
            "number" if !value.is_number() => Some(format!("{at}: expected a number, got {value}")),
            "boolean" if !value.is_boolean() => {
                Some(format!("{at}: expected a boolean, got {value}"))
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLAIN: Dialect = Dialect {
        ref_prefix: "#/definitions/",
        string_format: |format, s| {
            (format == "digits" && !s.chars().all(|c| c.is_ascii_digit()))
                .then(|| format!("{s:?} is not digits"))
        },
    };

    fn definitions() -> Value {
        json!({
            "Task": {
                "properties": {
                    "id": {"type": "string", "format": "digits"},
                    "state": {"type": "string", "enum": ["active", "completed"]},
                    "retries": {"type": "integer", "format": "int32"},
                    "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                    "free": {"type": "object", "properties": {"a": {"type": "string"}}, "additionalProperties": true},
                    "closed": {"type": "object", "properties": {"a": {"type": "string"}}, "additionalProperties": false},
                    "steps": {"type": "array", "items": {"$ref": "#/definitions/Step"}},
                    "created": {"type": "string", "readOnly": true},
                    "extra": {"$ref": "#/definitions/Stub"},
                    "missing": {"$ref": "#/definitions/Nowhere"}
                },
                "required": ["id"]
            },
            "Step": {"type": "object", "properties": {"done": {"type": "boolean"}}},
            "Stub": {"type": "object"}
        })
    }

    #[test]
    fn each_rule_names_where_and_what() {
        let defs = definitions();
        let check = |v: Value| check(&PLAIN, &defs, "Task", &v, "task");
        let good = json!({
            "id": "42", "state": "active", "retries": 3, "labels": {"a": "b"},
            "steps": [{"done": true}], "extra": {"anything": [1, 2]}, "free": {"a": "x", "b": 1}
        });
        assert_eq!(check(good.clone()), Vec::<String>::new());
        // An answer may carry what a request must not set.
        let mut answer = good;
        answer["created"] = json!("now");
        let answered = check_answer(&PLAIN, &defs, "Task", &answer, "task");
        assert_eq!(answered, Vec::<String>::new());
        let cases = [
            (json!({}), "task: the required property id is missing"),
            (json!({"id": "4x"}), "task.id: \"4x\" is not digits"),
            (json!({"id": 4}), "task.id: expected a string, got 4"),
            (
                json!({"id": "1", "state": "gone"}),
                "task.state: \"gone\" is not one of",
            ),
            (
                json!({"id": "1", "retries": 1u64 << 40}),
                "does not fit an int32",
            ),
            (
                json!({"id": "1", "labels": {"a": 1}}),
                "task.labels.a: expected a string",
            ),
            (
                json!({"id": "1", "steps": [{"done": 1}]}),
                "task.steps[0].done: expected a boolean",
            ),
            (
                json!({"id": "1", "steps": {}}),
                "task.steps: expected an array",
            ),
            (
                json!({"id": "1", "created": "now"}),
                "task.created: output only",
            ),
            (
                json!({"id": "1", "other": 1}),
                "task.other: the API description defines no such",
            ),
            (
                json!({"id": "1", "closed": {"b": 1}}),
                "task.closed.b: the API description defines no such",
            ),
            (
                json!({"id": "1", "missing": 1}),
                "the excerpt has no definition Nowhere",
            ),
        ];
        for (value, expected) in cases {
            let errors = check(value.clone());
            assert_eq!(errors.len(), 1, "{value}: {errors:?}");
            assert!(errors[0].contains(expected), "{value}: {errors:?}");
        }
    }
}
