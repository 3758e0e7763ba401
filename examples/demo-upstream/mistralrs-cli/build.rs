//! Build script of the `mistralrs` binary: records the enabled features for
//! `mistralrs info`. The GPU code is mistralrs-core's (its build.rs).

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let features = demo_buildinfo::enabled_features();
    println!("cargo:rustc-env=MISTRALRS_FEATURES={}", features.join(","));
}
