//! `tollgate-bench-s3-server --port P --access-key A --secret-key S ROOT`:
//! serves directory `ROOT` over the S3 protocol with s3s-fs's file system,
//! every connection with TCP_NODELAY (see Cargo.toml for why).

use std::path::PathBuf;
use std::process::ExitCode;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use s3s::auth::SimpleAuth;
use s3s::service::S3ServiceBuilder;
use tokio::net::TcpListener;

/// The command line: a port, one key pair and the directory served.
struct Options {
    port: u16,
    access_key: String,
    secret_key: String,
    root: PathBuf,
}

/// Parses `--port`, `--access-key`, `--secret-key` and the root directory.
fn options() -> Result<Options, String> {
    let mut args = std::env::args().skip(1);
    let (mut port, mut access_key, mut secret_key, mut root) = (None, None, None, None);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--port" => port = Some(value()?.parse().map_err(|e| format!("--port: {e}"))?),
            "--access-key" => access_key = Some(value()?),
            "--secret-key" => secret_key = Some(value()?),
            _ if !arg.starts_with("--") => root = Some(PathBuf::from(arg)),
            _ => return Err(format!("unknown option {arg}")),
        }
    }
    Ok(Options {
        port: port.ok_or("--port is required")?,
        access_key: access_key.ok_or("--access-key is required")?,
        secret_key: secret_key.ok_or("--secret-key is required")?,
        root: root.ok_or("the directory to serve is required")?,
    })
}

#[tokio::main]
async fn main() -> ExitCode {
    let options = match options() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("tollgate-bench-s3-server: {e}");
            return ExitCode::from(2);
        }
    };
    match serve(options).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tollgate-bench-s3-server: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Accepts connections on 127.0.0.1 until killed.
async fn serve(options: Options) -> Result<(), Box<dyn std::error::Error>> {
    let fs = s3s_fs::FileSystem::new(&options.root)
        .map_err(|e| format!("{}: {e:?}", options.root.display()))?;
    let mut builder = S3ServiceBuilder::new(fs);
    builder.set_auth(SimpleAuth::from_single(options.access_key, options.secret_key));
    let service = builder.build();
    let listener = TcpListener::bind(("127.0.0.1", options.port)).await?;
    let http = ConnBuilder::new(TokioExecutor::new());
    loop {
        let (socket, _) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                eprintln!("tollgate-bench-s3-server: accept: {e}");
                continue;
            }
        };
        // The reason this program exists.
        socket.set_nodelay(true)?;
        let conn = http
            .serve_connection(TokioIo::new(socket), service.clone())
            .into_owned();
        tokio::spawn(async move {
            let _ = conn.await;
        });
    }
}
