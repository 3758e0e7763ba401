//! The library half of the demo: what the binaries report about themselves,
//! what the tiny HTTP server answers, and (with `cuda`) the GPU code.

#[cfg(feature = "cuda")]
pub mod cuda;
pub mod server;

pub use demo_banner::banner;
pub use demo_escape::json_string;
pub use demo_tensor::Tensor;

/// Set by build.rs: the compute capability the GPU code is for, e.g. "86";
/// None without CUDA.
pub const COMPUTE_CAP: Option<&str> = {
    const RAW: &str = env!("MISTRALRS_COMPUTE_CAP");
    if RAW.is_empty() {
        None
    } else {
        Some(RAW)
    }
};

/// Run both kinds of GPU kernel on GPU 0: Ok(report) or Err((exit status, message)).
#[cfg(feature = "cuda")]
pub fn selftest() -> Result<String, (u8, String)> {
    cuda::selftest(COMPUTE_CAP.expect("build.rs sets the compute cap with cuda"))
}

/// Without CUDA there is nothing to run.
#[cfg(not(feature = "cuda"))]
pub fn selftest() -> Result<String, (u8, String)> {
    Err((2, "built without CUDA".to_string()))
}

/// What `mistralrs info` prints, one line of JSON.
pub struct BuildInfo<'a> {
    pub name: &'a str,
    pub version: &'a str,
    /// `None` when built without CUDA.
    pub compute_cap: Option<&'a str>,
    pub features: Vec<&'a str>,
}

impl BuildInfo<'_> {
    pub fn to_json(&self) -> String {
        let mut features = self.features.clone();
        // Sorted so the output does not depend on how the list was gathered.
        features.sort_unstable();
        features.dedup();
        let features: Vec<String> = features.iter().map(|f| json_string(f)).collect();
        format!(
            "{{\"name\":{},\"version\":{},\"compute_cap\":{},\"features\":[{}],\"cuda\":{}}}",
            json_string(self.name),
            json_string(self.version),
            self.compute_cap.map_or("null".to_string(), json_string),
            features.join(","),
            self.compute_cap.is_some(),
        )
    }
}

/// An HTTP answer: status code, content type, body.
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
}

/// The whole "server": OpenAI-style model listing plus a health check.
pub fn route(method: &str, path: &str, model_id: &str) -> Response {
    // Ignore a query string, as any real router would.
    let path = path.split('?').next().unwrap_or("");
    match (method, path) {
        ("GET", "/health") => Response {
            status: 200,
            content_type: "text/plain",
            body: "ok".to_string(),
        },
        ("GET", "/v1/models") => Response {
            status: 200,
            content_type: "application/json",
            body: format!(
                "{{\"object\":\"list\",\"data\":[{{\"id\":{},\"object\":\"model\",\"created\":0,\"owned_by\":\"local\"}}]}}",
                json_string(model_id)
            ),
        },
        _ => Response {
            status: 404,
            content_type: "text/plain",
            body: "not found".to_string(),
        },
    }
}

/// The reason phrase for the few status codes `route` and the server use.
pub fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        _ => "Error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_json() {
        assert_eq!(json_string("a\"b\\c\n\u{1}"), "\"a\\\"b\\\\c\\n\\u0001\"");
    }

    #[test]
    fn info_json_is_one_line() {
        let info = BuildInfo {
            name: "n",
            version: "1",
            compute_cap: None,
            features: vec![],
        };
        assert!(demo_testkit::json_line_has_keys(
            &info.to_json(),
            &["name", "version", "compute_cap", "features", "cuda"]
        ));
    }

    #[test]
    fn info_json() {
        let info = BuildInfo {
            name: "mistralrs",
            version: "0.9.2",
            compute_cap: Some("86"),
            features: vec!["flash-attn", "cuda"],
        };
        assert_eq!(
            info.to_json(),
            r#"{"name":"mistralrs","version":"0.9.2","compute_cap":"86","features":["cuda","flash-attn"],"cuda":true}"#
        );
        let cpu = BuildInfo {
            compute_cap: None,
            features: vec![],
            ..info
        };
        assert_eq!(
            cpu.to_json(),
            r#"{"name":"mistralrs","version":"0.9.2","compute_cap":null,"features":[],"cuda":false}"#
        );
    }

    #[test]
    fn routes() {
        assert_eq!(route("GET", "/health", "m").status, 200);
        assert!(route("GET", "/v1/models", "my/model")
            .body
            .contains("\"id\":\"my/model\""));
        assert_eq!(route("POST", "/health", "m").status, 404);
        assert_eq!(route("GET", "/nope", "m").status, 404);
    }
}
