/** The reader against debugfs/dumpe2fs: ext4 with extents, htree directories (see ext4Variants.ts for the checks). */
import { describeVariants } from './ext4Variants.js';

describeVariants(['ext4 4k metadata_csum 64bit', 'ext4 1k', 'ext4 2k ^64bit ^metadata_csum (uninit_bg)', 'ext4 inline_data', 'ext4 64k blocks', 'ext4 4k htree', 'ext4 1k htree (2 levels)']);
