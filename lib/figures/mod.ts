/**
 * Figures: data in, figure out. Each {@link Figure} displays inline in a notebook and saves itself
 * as SVG and PNG; the same object in both places.
 * @module
 */
export { Figure, plotFigure } from "./figure.ts";
export {
  plotClassCounts,
  plotConfusionMatrix,
  plotImageSizes,
  plotPaddingConventions,
  plotSeedSpread,
  plotStorageModes,
  plotTrainingCurves,
} from "./charts.ts";
export { plotBreakdown, plotCalibration, plotRoc, plotShortcutProbe } from "./review_charts.ts";
export {
  augmentationPreview,
  gradCamGrid,
  maskPreview,
  nearDuplicateGallery,
  predictionGrid,
  sampleGrid,
} from "./grids.ts";
export { composeGrid, svgToPng, type Tile } from "./raster.ts";
