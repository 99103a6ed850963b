/** The reader against debugfs/dumpe2fs: block maps (ext2, ext3, ^extent), 128-byte inodes, meta_bg (see ext4Variants.ts). */
import { describeVariants } from './ext4Variants.js';

describeVariants(['ext4 ^extent (block maps)', 'ext2', 'ext3 -I 128', 'ext4 -I 128', 'ext4 meta_bg sparse_super2']);
