use clap::Args;
#[derive(Args, Debug)]
pub struct BenchArgs {}
pub async fn run(_c: &super::Context, _a: BenchArgs) -> anyhow::Result<()> {
    Ok(())
}
