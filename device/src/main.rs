//! `iotcore-device`: the device agent's command line. Everything lives in the library; see
//! [`device::cli`].

fn main() -> std::process::ExitCode {
    device::cli::main()
}
