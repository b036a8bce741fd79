//! `openapi/openapi.json` must equal what the code generates, so clients can rely on it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

#[test]
fn committed_openapi_document_matches_the_code() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../openapi/openapi.json");
    let generated = volli_node::api::openapi_json();
    if std::env::var_os("VOLLI_UPDATE_OPENAPI").is_some() {
        std::fs::write(&path, &generated).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "openapi/openapi.json is out of date with the code. Regenerate it with\n\
         \n    cargo run -p volli-node -- openapi > openapi/openapi.json\n\
         \nor: VOLLI_UPDATE_OPENAPI=1 cargo test -p volli-node --test openapi"
    );
}

#[test]
fn every_route_documents_its_errors_in_the_common_shape() {
    let doc: serde_json::Value = serde_json::from_str(&volli_node::api::openapi_json()).unwrap();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let responses = op["responses"].as_object().unwrap();
            if path.starts_with("/v1/") {
                let unauthorized =
                    &responses["401"]["content"]["application/json"]["schema"]["$ref"];
                assert_eq!(
                    unauthorized, "#/components/schemas/ErrorBody",
                    "{method} {path}"
                );
                // The admin page's and clients' logins take a one-time code instead of a token.
                let takes_a_code = (path == "/v1/admin/session" || path == "/v1/clients/login")
                    && method == "post";
                assert_eq!(
                    op["security"].is_array(),
                    !takes_a_code,
                    "{method} {path} declares its auth"
                );
            }
        }
    }
}

#[test]
fn operation_ids_are_unique_and_path_parameters_are_in_the_path() {
    // Client generators key their types on operation ids, and put path parameters into the
    // URL template: a repeated id or a query parameter said to be in the path breaks them.
    let doc: serde_json::Value = serde_json::from_str(&volli_node::api::openapi_json()).unwrap();
    let mut seen = std::collections::HashSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let id = op["operationId"].as_str().unwrap().to_owned();
            assert!(
                seen.insert(id.clone()),
                "{method} {path}: operationId {id} repeated"
            );
            for param in op["parameters"].as_array().into_iter().flatten() {
                if param["in"] == "path" {
                    let name = param["name"].as_str().unwrap();
                    assert!(
                        path.contains(&format!("{{{name}}}")),
                        "{method} {path}: path parameter {name} is not in the path"
                    );
                }
            }
        }
    }
}
