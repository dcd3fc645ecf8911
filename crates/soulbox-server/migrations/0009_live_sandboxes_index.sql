-- The live sandboxes are read at every sampler pass and scrape (and by the lifecycle loop):
-- a partial index keeps that from scanning every sandbox ever killed.
CREATE INDEX sandboxes_live ON sandboxes(state) WHERE state != 'killed';
