//! `spindle plugin new|build|inspect|test`: the plugin author's workflow.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use secrecy::SecretString;
use spindle_config::{AllowedHost, PluginLimits};
use spindle_plugin_host::{Batch, CallLimits, PluginHost, locate};

use crate::Failure;
use crate::commands::print;

const TEMPLATE_LIB: &str = include_str!("../../../../plugins/template/src/lib.rs");

/// Creates `plugins/<name>` from the template and adds it to the workspace's members.
pub fn new(workspace: &Path, name: &str) -> Result<(), Failure> {
    let valid = !name.is_empty()
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !valid {
        return Err(anyhow::anyhow!("`{name}` is not a plugin name: use lowercase letters, digits and `-`, starting with a letter").into());
    }
    let manifest = workspace.join("Cargo.toml");
    let text = std::fs::read_to_string(&manifest).with_context(|| {
        format!(
            "{} is not a plugin workspace (no Cargo.toml); pass --workspace",
            workspace.display()
        )
    })?;
    let dir = workspace.join(name);
    if dir.exists() {
        return Err(anyhow::anyhow!("{} already exists", dir.display()).into());
    }
    std::fs::create_dir_all(dir.join("src"))
        .with_context(|| format!("creating {}", dir.display()))?;
    let cargo = format!(
        "[package]\nname = \"{name}\"\ndescription = \"Spindle destination: {name}.\"\nversion.workspace = true\nedition.workspace = true\n\
         rust-version.workspace = true\nlicense.workspace = true\npublish.workspace = true\n\n[lib]\ncrate-type = [\"cdylib\"]\n\n\
         [dependencies]\nspindle-plugin-sdk = {{ workspace = true }}\nserde = {{ workspace = true }}\nserde_json = {{ workspace = true }}\n"
    );
    std::fs::write(dir.join("Cargo.toml"), cargo).context("writing Cargo.toml")?;
    let lib = TEMPLATE_LIB.replace("Info::new(\"template\"", &format!("Info::new(\"{name}\""));
    std::fs::write(dir.join("src/lib.rs"), lib).context("writing src/lib.rs")?;
    let Some(start) = text.find("members = [") else {
        return Err(anyhow::anyhow!(
            "{} has no `members = [...]` list to add `{name}` to",
            manifest.display()
        )
        .into());
    };
    let insert_at = start + "members = [".len();
    let updated = format!("{}\"{name}\", {}", &text[..insert_at], &text[insert_at..]);
    std::fs::write(&manifest, updated).context("adding the plugin to the workspace")?;
    print(&format!(
        "created {dir}: edit {dir}/src/lib.rs, then `spindle plugin build {name}` and `spindle plugin test {name} --fixture <dir>`\n",
        dir = dir.display()
    ))
}

/// Builds plugins for wasm32-wasip2 with the size-optimised `plugin` profile.
pub fn build(workspace: &Path, names: &[String]) -> Result<(), Failure> {
    let manifest = workspace.join("Cargo.toml");
    if !manifest.is_file() {
        return Err(anyhow::anyhow!(
            "{} is not a plugin workspace; pass --workspace",
            workspace.display()
        )
        .into());
    }
    // The output goes where `locate` looks, whatever CARGO_TARGET_DIR says.
    let target_dir = workspace.join("target");
    let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    command
        .args(["build", "--target-dir"])
        .arg(&target_dir)
        .args([
            "--target",
            "wasm32-wasip2",
            "--profile",
            "plugin",
            "--manifest-path",
        ])
        .arg(&manifest);
    if names.is_empty() {
        command.arg("--workspace");
    }
    for name in names {
        command.args(["-p", name]);
    }
    let status = command
        .status()
        .context("running cargo (is Rust installed?)")?;
    if !status.success() {
        return Err(anyhow::anyhow!(
            "the build failed; if the target is missing: `rustup target add wasm32-wasip2`"
        )
        .into());
    }
    let out = target_dir.join("wasm32-wasip2/plugin");
    let mut lines = String::new();
    for entry in std::fs::read_dir(&out).with_context(|| format!("reading {}", out.display()))? {
        let path = entry.context("reading the build folder")?.path();
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().replace('_', "-"))
            .unwrap_or_default();
        let wanted = names.is_empty() || names.contains(&stem);
        if path.extension().is_some_and(|e| e == "wasm") && wanted {
            let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            lines.push_str(&format!("built {} ({} KiB)\n", path.display(), size / 1024));
        }
    }
    print(&lines)
}

fn limits_for_inspection() -> CallLimits {
    CallLimits {
        limits: PluginLimits {
            memory_bytes: 64 << 20,
            timeout: Duration::from_secs(10),
            fuel: None,
        },
        allow_hosts: vec![],
        secrets: BTreeMap::new(),
    }
}

/// Prints a component's contract, version, imports and config schema.
pub async fn inspect(file: &Path) -> Result<(), Failure> {
    let host = PluginHost::new(None).context("starting the plugin engine")?;
    let (imports, exports) = host.interface(file).context("reading the component")?;
    let mut out = format!(
        "{}\n  imports: {}\n  exports: {}\n",
        file.display(),
        imports.join(", "),
        exports.join(", ")
    );
    match host.load(file) {
        Ok(plugin) => {
            let info = host
                .describe(&plugin, &limits_for_inspection())
                .await
                .context("calling describe")?;
            let modes: Vec<&str> = info
                .sync_modes
                .iter()
                .map(|m| match m {
                    spindle_plugin_host::SyncMode::Upsert => "upsert",
                    spindle_plugin_host::SyncMode::Mirror => "mirror",
                    spindle_plugin_host::SyncMode::AddOnly => "add_only",
                })
                .collect();
            let schema: serde_json::Value =
                serde_json::from_str(&info.config_schema).unwrap_or_default();
            out.push_str(&format!(
                "  world: spindle:destination@{}\n  plugin: {} {}\n  sync modes: {}\n  max batch size: {}\n  config schema:\n{}\n",
                spindle_plugin_host::SUPPORTED_VERSION,
                info.name,
                info.version,
                modes.join(", "),
                info.max_batch_size,
                serde_json::to_string_pretty(&schema).unwrap_or_default()
            ));
        }
        Err(err) => out.push_str(&format!("  not loadable by this build: {err}\n")),
    }
    print(&out)
}

/// One recorded exchange of a fixture.
#[derive(Debug, Clone, serde::Deserialize)]
struct Exchange {
    request: RecordedRequest,
    response: RecordedResponse,
}

#[derive(Debug, Clone, serde::Deserialize)]
struct RecordedRequest {
    method: String,
    path: String,
}

#[derive(Debug, Clone, serde::Deserialize)]
struct RecordedResponse {
    status: u16,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    body: serde_json::Value,
}

/// Runs a plugin against a fixture's recorded exchanges, replayed by a local server.
pub async fn test(plugin: &str, fixture: &Path) -> Result<(), Failure> {
    let read = |name: &str| -> anyhow::Result<String> {
        std::fs::read_to_string(fixture.join(name))
            .with_context(|| format!("reading {}", fixture.join(name).display()))
    };
    let exchanges: Vec<Exchange> =
        serde_json::from_str(&read("exchanges.json")?).context("exchanges.json")?;
    let secrets: BTreeMap<String, String> = match fixture.join("secrets.json").is_file() {
        true => serde_json::from_str(&read("secrets.json")?).context("secrets.json")?,
        false => BTreeMap::new(),
    };
    let queue = Arc::new(Mutex::new(std::collections::VecDeque::from(
        exchanges.clone(),
    )));
    let log: Arc<Mutex<Vec<String>>> = Arc::default();
    let (server_queue, server_log) = (queue.clone(), log.clone());
    let app = axum::Router::new().fallback(move |method: axum::http::Method, uri: axum::http::Uri, body: axum::body::Bytes| {
        let (queue, log) = (server_queue.clone(), server_log.clone());
        async move {
            let next = queue.lock().ok().and_then(|mut q| q.pop_front());
            let body_text = String::from_utf8_lossy(&body).chars().take(400).collect::<String>();
            let Some(exchange) = next else {
                log.lock().map(|mut l| l.push(format!("> {method} {uri} {body_text}\n< 599 unexpected request: no recorded exchange left"))).ok();
                return (axum::http::StatusCode::from_u16(599).unwrap_or(axum::http::StatusCode::INTERNAL_SERVER_ERROR), axum::http::HeaderMap::new(), String::new());
            };
            let matches = exchange.request.method.eq_ignore_ascii_case(method.as_str()) && exchange.request.path == uri.path();
            let mut headers = axum::http::HeaderMap::new();
            for (name, value) in &exchange.response.headers {
                if let (Ok(n), Ok(v)) = (axum::http::HeaderName::try_from(name.as_str()), axum::http::HeaderValue::from_str(value)) {
                    headers.insert(n, v);
                }
            }
            let body = match &exchange.response.body {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Null => String::new(),
                other => other.to_string(),
            };
            let mark = if matches { "" } else { "  (DIFFERS from the recording: expected {} {})" };
            let note = if matches { String::new() } else { mark.replacen("{}", &exchange.request.method, 1).replacen("{}", &exchange.request.path, 1) };
            log.lock().map(|mut l| l.push(format!("> {method} {uri} {body_text}{note}\n< {} {}", exchange.response.status, body.chars().take(400).collect::<String>()))).ok();
            let status = axum::http::StatusCode::from_u16(exchange.response.status).unwrap_or(axum::http::StatusCode::INTERNAL_SERVER_ERROR);
            (status, headers, body)
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("binding a local port")?;
    let port = listener.local_addr().context("local address")?.port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let base = format!("http://127.0.0.1:{port}");
    let batch_text = read("batch.json")?.replace("{{base_url}}", &base);
    let batch: serde_json::Value = serde_json::from_str(&batch_text).context("batch.json")?;
    let batch = parse_batch(&batch).context("batch.json")?;

    let path = locate(plugin, Path::new(".")).context("finding the plugin")?;
    let host = PluginHost::new(None).context("starting the plugin engine")?;
    let loaded = host.load(&path).context("loading the plugin")?;
    let limits = CallLimits {
        limits: PluginLimits {
            memory_bytes: 128 << 20,
            timeout: Duration::from_secs(30),
            fuel: None,
        },
        allow_hosts: vec![AllowedHost {
            scheme: Some("http".into()),
            host: "127.0.0.1".into(),
            port: Some(port),
        }],
        secrets: secrets
            .into_iter()
            .map(|(k, v)| (k, SecretString::from(v)))
            .collect(),
    };
    let result = host.sync_batch(&loaded, &limits, &batch).await;
    let mut out = String::new();
    for line in log.lock().map(|l| l.clone()).unwrap_or_default() {
        out.push_str(&line);
        out.push('\n');
    }
    let left = queue.lock().map(|q| q.len()).unwrap_or(0);
    match result {
        Ok(Ok(outcomes)) => {
            for outcome in outcomes {
                out.push_str(&format!("{}: {:?}\n", outcome.id, outcome.outcome));
            }
        }
        Ok(Err(err)) => out.push_str(&format!("batch failed: {err:?}\n")),
        Err(err) => out.push_str(&format!("plugin failed: {err}\n")),
    }
    if left > 0 {
        out.push_str(&format!("{left} recorded exchange(s) were not used\n"));
    }
    print(&out)
}

/// A batch from the fixture's JSON: `{"mode", "config", "upserts": [{"id", "identifiers": {...}, "fields": {...}}], "removals": [...]}`.
fn parse_batch(value: &serde_json::Value) -> anyhow::Result<Batch> {
    use spindle_plugin_host::{Identifier, Removal, SyncMode, Upsert};
    let identifiers = |v: &serde_json::Value| -> Vec<Identifier> {
        v.as_object()
            .into_iter()
            .flatten()
            .map(|(kind, value)| Identifier {
                kind: kind.clone(),
                value: value.as_str().unwrap_or_default().to_owned(),
            })
            .collect()
    };
    let mode = match value["mode"].as_str().unwrap_or("upsert") {
        "upsert" => SyncMode::Upsert,
        "mirror" => SyncMode::Mirror,
        "add_only" => SyncMode::AddOnly,
        other => bail!("unknown mode `{other}`"),
    };
    Ok(Batch {
        mode,
        config: value["config"].to_string(),
        upserts: value["upserts"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|u| Upsert {
                id: u["id"].as_str().unwrap_or_default().to_owned(),
                identifiers: identifiers(&u["identifiers"]),
                fields: u["fields"].to_string(),
            })
            .collect(),
        removals: value["removals"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| Removal {
                id: r["id"].as_str().unwrap_or_default().to_owned(),
                identifiers: identifiers(&r["identifiers"]),
            })
            .collect(),
    })
}

/// Where compiled plugins are cached, beside the configuration.
pub fn cache_dir(config_dir: &Path) -> PathBuf {
    config_dir.join(".spindle/plugin-cache")
}

/// The limits and grants of a configured destination's plugin calls.
pub fn call_limits(destination: &spindle_config::DestinationConfig) -> CallLimits {
    CallLimits {
        limits: destination.limits,
        allow_hosts: destination.allow_hosts.clone(),
        secrets: destination.secrets.clone(),
    }
}
