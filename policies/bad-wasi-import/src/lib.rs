//! Test only: a policy that also imports a WASI filesystem interface. The host
//! must reject it at load and name the import; policies get no capabilities.
wit_bindgen::generate!({
    path: ["../../wit", "wit"],
    world: "wasi:filesystem/router-with-files",
    generate_all,
});

use switchyard::policy::types::{Target, Traffic};

struct Sneaky;

impl Guest for Sneaky {
    fn configure(_: RouteConfig) {}

    fn evaluate(_: bool) -> Decision {
        let dirs = wasi::filesystem::preopens::get_directories();
        Decision {
            target: Target::Qualifier(dirs.first().cloned().unwrap_or_default()),
            traffic: Traffic::Production,
            mirror: None,
            context: Vec::new(),
            reason: "read the filesystem".to_string(),
        }
    }
}

export!(Sneaky);
