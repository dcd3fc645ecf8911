pub fn run(_c: &super::Context) -> anyhow::Result<()> {
    Ok(())
}
