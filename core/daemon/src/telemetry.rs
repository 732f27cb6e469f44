//! Logging: `tracing` to standard error, as text or JSON, filtered by `--log` / `SPINDLE_LOG`.

use tracing_subscriber::EnvFilter;

use crate::cli::LogFormat;

/// Crates whose debug and trace output is about compiling WebAssembly, not about Spindle: millions of lines
/// per plugin. They stay at `info` unless the filter names them.
const COMPILER_TARGETS: &[&str] = &[
    "cranelift_codegen",
    "cranelift_frontend",
    "cranelift_entity",
    "regalloc2",
    "wasmtime_internal_cranelift",
    "wasmtime_environ",
    "wasmtime::runtime::type_registry",
];

/// The filter as given, with the compiler crates held at `info` unless it names them.
fn with_quiet_compiler(filter: &str) -> String {
    let mut directives = vec![filter.to_owned()];
    for target in COMPILER_TARGETS {
        if !filter.contains(target) {
            directives.push(format!("{target}=info"));
        }
    }
    directives.retain(|d| !d.is_empty());
    directives.join(",")
}

/// Installs the global subscriber. An invalid filter falls back to `info` with a warning.
pub fn init(format: LogFormat, filter: &str) {
    let (filter, bad_filter) = match EnvFilter::try_new(with_quiet_compiler(filter)) {
        Ok(filter) => (filter, None),
        Err(err) => (EnvFilter::new("info"), Some(err.to_string())),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .init(),
    }
    if let Some(err) = bad_filter {
        tracing::warn!(error = %err, "invalid log filter; using `info`");
    }
}

#[cfg(test)]
mod tests {
    use super::with_quiet_compiler;

    #[test]
    fn the_compiler_stays_quiet_unless_named() {
        assert_eq!(
            with_quiet_compiler("trace"),
            "trace,cranelift_codegen=info,cranelift_frontend=info,cranelift_entity=info,regalloc2=info,\
             wasmtime_internal_cranelift=info,wasmtime_environ=info,wasmtime::runtime::type_registry=info"
        );
        let named = with_quiet_compiler("info,cranelift_codegen=trace");
        assert!(named.starts_with("info,cranelift_codegen=trace,cranelift_frontend=info"));
        assert_eq!(named.matches("cranelift_codegen").count(), 1);
    }
}
