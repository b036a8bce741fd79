//! The node's implementations of plugin capabilities that need no network stack: `kv` in
//! SQLite and `http` GET through a client that follows no redirects (the allow-list was
//! checked for the URL the plugin asked for, not for wherever a redirect would lead).

use std::time::Duration;

use volli_plugin_host::{BoxFuture, HttpBackend, HttpResponse, KvBackend, ServiceError};
use volli_store::Db;

pub(super) struct SqliteKv {
    db: Db,
}

impl SqliteKv {
    pub(super) fn new(db: Db) -> Self {
        Self { db }
    }
}

fn internal(e: volli_store::StoreError) -> ServiceError {
    tracing::error!(error = %e, "plugin kv storage failed");
    ServiceError::Internal("storage failed".into())
}

impl KvBackend for SqliteKv {
    fn get<'a>(
        &'a self,
        plugin: &'a str,
        key: &'a str,
    ) -> BoxFuture<'a, Result<Option<Vec<u8>>, ServiceError>> {
        Box::pin(async move { self.db.plugin_kv_get(plugin, key).await.map_err(internal) })
    }

    fn set<'a>(
        &'a self,
        plugin: &'a str,
        key: &'a str,
        value: Vec<u8>,
        quota: u64,
    ) -> BoxFuture<'a, Result<(), ServiceError>> {
        Box::pin(async move {
            match self.db.plugin_kv_set(plugin, key, &value, quota).await {
                Ok(true) => Ok(()),
                Ok(false) => Err(ServiceError::LimitExceeded(format!(
                    "kv quota of {quota} bytes"
                ))),
                Err(e) => Err(internal(e)),
            }
        })
    }

    fn delete<'a>(
        &'a self,
        plugin: &'a str,
        key: &'a str,
    ) -> BoxFuture<'a, Result<(), ServiceError>> {
        Box::pin(async move {
            self.db
                .plugin_kv_delete(plugin, key)
                .await
                .map_err(internal)
        })
    }

    fn keys<'a>(
        &'a self,
        plugin: &'a str,
        prefix: &'a str,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<String>, ServiceError>> {
        Box::pin(async move {
            self.db
                .plugin_kv_keys(plugin, prefix, limit)
                .await
                .map_err(internal)
        })
    }
}

pub(super) struct HttpGet {
    client: reqwest::Client,
}

impl HttpGet {
    pub(super) fn new() -> Self {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(5))
            .user_agent(concat!("volli-node/", env!("CARGO_PKG_VERSION")))
            .build()
            .unwrap_or_default();
        Self { client }
    }
}

impl HttpBackend for HttpGet {
    fn get<'a>(
        &'a self,
        url: &'a str,
        max_body: usize,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<HttpResponse, ServiceError>> {
        Box::pin(async move {
            let fetch =
                async {
                    let mut response =
                        self.client.get(url).send().await.map_err(|e| {
                            ServiceError::Unavailable(format!("request failed: {e}"))
                        })?;
                    let status = response.status().as_u16();
                    let mut body = Vec::new();
                    while let Some(chunk) = response.chunk().await.map_err(|e| {
                        ServiceError::Unavailable(format!("reading the body failed: {e}"))
                    })? {
                        if body.len() + chunk.len() > max_body {
                            return Err(ServiceError::LimitExceeded(format!(
                                "response body over {max_body} bytes"
                            )));
                        }
                        body.extend_from_slice(&chunk);
                    }
                    Ok(HttpResponse { status, body })
                };
            tokio::time::timeout(timeout, fetch)
                .await
                .map_err(|_| ServiceError::Unavailable("the request timed out".into()))?
        })
    }
}
