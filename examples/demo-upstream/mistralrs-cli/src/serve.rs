//! `mistralrs serve`: its command line; the server is mistralrs_core's.

/// Upstream's defaults.
const DEFAULT_HOST: &str = "0.0.0.0";
const DEFAULT_PORT: u16 = 1234;

pub fn main(args: &[String]) -> u8 {
    let mut model = None;
    let mut host = DEFAULT_HOST.to_string();
    let mut port = DEFAULT_PORT;
    let mut i = 0;
    while i < args.len() {
        // Accept both `--port 8080` and `--port=8080`.
        let (flag, inline) = match args[i].split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v.to_string())),
            _ => (args[i].as_str(), None),
        };
        let known = matches!(
            flag,
            "-m" | "--model" | "--model-id" | "--host" | "--port" | "-p"
        );
        if !known {
            // Upstream has many more options; they mean nothing here, but a
            // unit file may pass them, so go on. A following word that is not
            // an option is taken as this option's value.
            let mut ignored = args[i].clone();
            if flag.starts_with('-') && inline.is_none() {
                if let Some(next) = args.get(i + 1).filter(|n| !n.starts_with('-')) {
                    ignored = format!("{ignored} {next}");
                    i += 1;
                }
            }
            eprintln!("note: ignoring unsupported argument '{ignored}'");
            i += 1;
            continue;
        }
        let value = match (inline, args.get(i + 1)) {
            (Some(v), _) => v,
            (None, Some(v)) => {
                i += 1;
                v.clone()
            }
            (None, None) => return crate::usage_error(&format!("{flag} needs a value")),
        };
        match flag {
            "--host" => host = value,
            "--port" | "-p" => match value.parse() {
                Ok(p) => port = p,
                Err(_) => return crate::usage_error(&format!("invalid port '{value}'")),
            },
            _ => model = Some(value),
        }
        i += 1;
    }
    let Some(model) = model else {
        return crate::usage_error("serve needs a model: -m MODEL");
    };

    mistralrs_core::server::listen(&host, port, &model)
}
