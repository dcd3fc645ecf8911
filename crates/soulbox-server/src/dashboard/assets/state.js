// What the views share: the signed-in key's session ({team, keyId, keyName, role}).
export const state = { session: null };
export const isAdmin = () => state.session?.role === 'admin';
export const canChange = () => state.session && state.session.role !== 'read-only';
