export { BillingCard, BillingCard as default, daysLeft, statusOf } from "./BillingCard.jsx";
