//! Guest bindings for the platform imports and `wasi:http/types`, generated once here so that
//! every plugin shares the same types (plugins map these interfaces with `with`, see
//! [`crate::generate!`]).

wit_bindgen::generate!({
    inline: r#"
        package ctxhost:sdk;

        world sdk {
            import ctxhost:platform/types@0.1.0;
            import ctxhost:platform/store@0.1.0;
            import ctxhost:platform/events@0.1.0;
            import ctxhost:platform/config@0.1.0;
            import ctxhost:platform/log@0.1.0;
            import ctxhost:platform/identity@0.1.0;
            import ctxhost:platform/secrets@0.1.0;
            import wasi:config/store@0.2.0-draft;
            import wasi:http/types@0.2.12;
        }
    "#,
    path: "../wit",
    generate_all,
    generate_unused_types: true,
});
