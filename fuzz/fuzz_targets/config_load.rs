//! The configuration loader: any file text plus `DATAGATE_*` variables (input lines of the
//! form `DATAGATE_...=value`) give a configuration or an error naming the key; never a panic.
#![no_main]

use datagate_core::config::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut file = String::new();
    let mut env = Vec::new();
    for line in text.lines() {
        match line.strip_prefix("DATAGATE_").and_then(|l| l.split_once('=')) {
            Some((k, v)) => env.push((format!("DATAGATE_{k}"), v.to_string())),
            None => {
                file.push_str(line);
                file.push('\n');
            }
        }
    }
    let path = std::env::temp_dir().join(format!("datagate-fuzz-{}.toml", std::process::id()));
    std::fs::write(&path, file).expect("temp file");
    if let Ok(cfg) = Config::load_with_env(Some(&path), env) {
        let _ = cfg.validate();
    }
});
