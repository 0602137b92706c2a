//! Test only: a valid component that exports some other world (a CLI-like
//! `run`), so the host must refuse it as a policy.
wit_bindgen::generate!({
    inline: "
        package test:wrong-world;
        world other {
            export run: func() -> string;
        }
    ",
});

struct Other;

impl Guest for Other {
    fn run() -> String {
        "not a policy".to_string()
    }
}

export!(Other);
