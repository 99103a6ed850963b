/** Every target a pool worker can run, by name (protocol.ts gives each one's input). */
import type { TargetInputs, TargetName, TargetResult } from '../protocol.js';
import { ext4Target } from './ext4.js';
import { imageTarget } from './image.js';
import { selfTestTargets } from './selfTest.js';
import { tarTarget } from './tar.js';

export const TARGETS: { readonly [K in TargetName]: (input: TargetInputs[K]) => Promise<TargetResult> } = {
  image: imageTarget,
  ext4: ext4Target,
  tar: tarTarget,
  ...selfTestTargets,
};
